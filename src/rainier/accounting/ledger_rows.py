"""Ledger lines in the database: the insert that skips stored keys, and the indexed queries
the API, the planner and the statement read them by."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, func, not_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rainier.metering import ContractTerms, Statement, UsageLine, monthly_statement
from rainier.metering.periods import month_bounds
from rainier.store.tables import Contract, Tenant, UsageLineRow

LINE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(UsageLine))
LINES = UsageLineRow.__table__


def line_row(line: UsageLine) -> dict[str, Any]:
    return {name: getattr(line, name) for name in LINE_FIELDS}


def row_line(row: Any) -> UsageLine:
    return UsageLine(**{name: getattr(row, name) for name in LINE_FIELDS})  # type: ignore[arg-type]


def _insert_ignoring_duplicates(dialect: str) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(LINES).on_conflict_do_nothing(index_elements=["key"])


def insert_lines(s: Session | Connection, lines: Sequence[UsageLine]) -> None:
    """Adds the lines to the caller's transaction; a line whose key is stored already is skipped
    (ON CONFLICT DO NOTHING on `key`, on SQLite and PostgreSQL alike)."""
    if not lines:
        return
    dialect = s.get_bind().dialect.name if isinstance(s, Session) else s.dialect.name
    s.execute(_insert_ignoring_duplicates(dialect), [line_row(line) for line in lines])


def select_lines(
    *,
    contract: str | None = None,
    tenant: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    """Lines by the indexed columns: a contract or a tenant, period start in [since, until).
    The index leads with the tenant, so a contract given without its tenant has the tenant
    looked up (every line of a contract is its tenant's, see `charges`)."""
    query = select(*(LINES.c[name] for name in LINE_FIELDS))
    if contract is not None:
        query = query.where(LINES.c.contract == contract)
        if tenant is None:
            query = query.where(LINES.c.tenant == _tenant_of(contract))
    if tenant is not None:
        query = query.where(LINES.c.tenant == tenant)
    if since is not None:
        query = query.where(LINES.c.period_start >= since)
    if until is not None:
        query = query.where(LINES.c.period_start < until)
    return query.order_by(LINES.c.period_start, LINES.c.key)


def _tenant_of(contract: str) -> Any:
    return (
        select(Tenant.name)
        .join(Contract, Contract.tenant_id == Tenant.id)
        .where(Contract.name == contract)
        .scalar_subquery()
    )


def of_contract(terms: ContractTerms) -> Any:
    """The lines of the contract, by the index: its tenant's, then the contract."""
    return and_(LINES.c.tenant == terms.tenant, LINES.c.contract == terms.contract)


def iter_lines(s: Session, query: Any) -> Iterator[UsageLine]:
    for row in s.execute(query):
        yield row_line(row)


def _draws_down(terms: ContractTerms) -> Any:
    """`rainier.metering.draws_down` as a WHERE clause."""
    c = LINES.c
    return and_(
        of_contract(terms),
        c.kind != "true_up",
        not_(and_(c.kind == "correction", c.corrects_kind == "true_up")),
        c.period_start >= terms.start,
        c.period_start < terms.end,
        c.period_end <= terms.end,
    )


def drawn_usd(s: Session, terms: ContractTerms, before: datetime | None = None) -> Decimal:
    """The commitment drawn so far (lines starting before `before`), summed by the database."""
    query = select(func.sum(LINES.c.amount_usd)).where(_draws_down(terms))
    if before is not None:
        query = query.where(LINES.c.period_start < before)
    return Decimal(s.scalar(query) or 0)


def stored_statement(s: Session, terms: ContractTerms, year: int, month: int) -> Statement:
    """`monthly_statement` over only that month's lines of the contract (one index range), with
    what was drawn before the month summed by the database."""
    start, end = month_bounds(year, month)
    lines = iter_lines(
        s, select_lines(contract=terms.contract, tenant=terms.tenant, since=start, until=end)
    )
    st = monthly_statement(terms, lines, year, month)
    before = drawn_usd(s, terms, before=start)
    return replace(
        st,
        drawn_before_usd=before,
        remaining_usd=terms.committed_usd - before - st.drawn_in_period_usd,
    )
