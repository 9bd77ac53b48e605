"""Which contract a usage falls under, and at what prices: the price book and contract terms
read from the database, and the split of a span of usage where one term ends and the next
begins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rainier.accounting.ledger_rows import insert_lines
from rainier.metering import (
    ChipPrice,
    ContractTerms,
    PriceBook,
    TokenPrice,
    TokenUsage,
    charge_tokens,
    default_price_book,
)
from rainier.spec import ContractSpec
from rainier.store.tables import Contract, PricePoint, Tenant

NO_CONTRACT = ""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def load_price_book(s: Session) -> PriceBook:
    """The newest version in `price_points`, or the default book when the operator set none."""
    version = s.scalar(select(func.max(PricePoint.version)))
    if version is None:
        return default_price_book()
    rows = s.scalars(select(PricePoint).where(PricePoint.version == version)).all()
    chips = tuple(ChipPrice(r.sku, r.usd, r.effective_from) for r in rows if r.kind == "chip")
    tokens = tuple(
        TokenPrice(r.sku, r.usd, r.output_usd or Decimal(0), r.effective_from)
        for r in rows
        if r.kind == "token"
    )
    return PriceBook(version=version, chip_prices=chips, token_prices=tokens)


def contract_terms(row: Contract) -> ContractTerms:
    return ContractTerms.from_spec(ContractSpec.model_validate(row.spec), row.name)


def uncontracted(tenant: str) -> ContractTerms:
    """Usage of a tenant without any contract: billed at list price, drawing nothing down."""
    return ContractTerms(
        contract=NO_CONTRACT,
        tenant=tenant,
        start=_EPOCH,
        end=_EPOCH + timedelta(microseconds=1),
        committed_usd=Decimal(0),
    )


def contract_at(contracts: Sequence[ContractTerms], at: datetime) -> ContractTerms | None:
    """The contract whose term holds `at`; else the last one begun before it; else the first."""
    if not contracts:
        return None
    ordered = sorted(contracts, key=lambda t: (t.start, t.contract))
    for terms in ordered:
        if terms.start <= at < terms.end:
            return terms
    begun = [t for t in ordered if t.start <= at]
    return begun[-1] if begun else ordered[0]


def segments(
    contracts: Sequence[ContractTerms], tenant: str, start: datetime, end: datetime
) -> list[tuple[ContractTerms, datetime, datetime]]:
    """[start, end) split where one contract's term ends and the next one's begins."""
    out = []
    while start < end:
        terms = contract_at(contracts, start) or uncontracted(tenant)
        cut = end
        if terms.contract != NO_CONTRACT:
            for other in contracts:
                if start < other.start < cut:
                    cut = other.start
            if terms.start <= start < terms.end:
                cut = min(cut, terms.end)
        out.append((terms, start, cut))
        start = cut
    return out


def tenant_contracts(s: Session, tenant_id: str) -> list[ContractTerms]:
    rows = s.scalars(select(Contract).where(Contract.tenant_id == tenant_id)).all()
    return [contract_terms(r) for r in rows]


def record_tokens(s: Session, usage: TokenUsage, prices: PriceBook | None = None) -> list[str]:
    """Prices one request's tokens in the caller's transaction; `usage.contract` may be empty
    (the tenant's contract at `usage.at` is used). Returns the contracts whose ledger moved."""
    tenant = s.scalars(select(Tenant).where(Tenant.name == usage.tenant)).one_or_none()
    contracts = tenant_contracts(s, tenant.id) if tenant is not None else []
    named = [t for t in contracts if t.contract == usage.contract]
    terms = (named[0] if named else contract_at(contracts, usage.at)) or uncontracted(usage.tenant)
    priced = replace(usage, contract=terms.contract)
    lines = charge_tokens(priced, terms, prices or load_price_book(s))
    insert_lines(s, lines)
    return [terms.contract] if lines else []
