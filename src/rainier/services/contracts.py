"""Contracts: signing one for a tenant, or changing the one of that name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.control.plan import backdate_charge
from rainier.spec import ContractSpec
from rainier.store.tables import Contract, Tenant, new_id, utcnow

from .errors import Refused

BACKDATE_SLACK = timedelta(minutes=5)


def apply_contract(
    s: Session, doc: ContractSpec
) -> tuple[Contract, Tenant, Decimal | None, str | None]:
    """Creates the contract, or updates the one of that name (same tenant only); with what a
    term that began in the past billed at signing, and a note saying so."""
    tenant = s.scalars(select(Tenant).where(Tenant.name == doc.tenant)).one_or_none()
    if tenant is None:
        raise Refused(422, f"tenant {doc.tenant!r} does not exist", field="tenant")
    row = s.scalars(select(Contract).where(Contract.name == doc.name)).one_or_none()
    billed, note = _backdating(s, doc, row)
    if row is None:
        row = Contract(id=new_id("ctr"), name=doc.name, tenant_id=tenant.id)
        s.add(row)
    elif row.tenant_id != tenant.id:
        raise Refused(409, f"contract {doc.name!r} belongs to another tenant", field="name")
    row.term_start, row.term_end = doc.term.start, doc.term.end
    row.committed_usd = doc.committed_usd
    row.spec = doc.model_dump(mode="json")
    row.updated_at = utcnow()
    return row, tenant, billed, note


def _backdating(
    s: Session, doc: ContractSpec, row: Contract | None
) -> tuple[Decimal | None, str | None]:
    """A new term (or a start moved earlier) that began in the past bills its reservations
    since then at once: refused unless the document says `backdate: true`, and said."""
    now = utcnow()
    old_start = _utc(row.term_start) if row is not None else None
    moved_back = old_start is None or doc.term.start < old_start
    if not moved_back or doc.term.start >= now - BACKDATE_SLACK:
        return None, None
    billed, note = backdate_charge(s, doc, now)
    if not doc.backdate:
        raise Refused(
            422,
            f"term.start {doc.term.start.isoformat()} is in the past: {note}. Apply with "
            "--backdate (backdate: true) to sign it anyway, or start the term now",
            field="term.start",
        )
    return billed, note


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
