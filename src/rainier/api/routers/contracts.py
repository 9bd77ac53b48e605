"""Contracts: signed by the operator for a tenant; the tenant's keys may read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.api.auth import Caller, require
from rainier.api.deps import Limit, StoreDep, page_of, visible_tenant
from rainier.api.errors import ApiError, not_found
from rainier.api.schemas import ContractOut, Page
from rainier.control.plan import backdate_charge
from rainier.spec import ContractSpec
from rainier.store.tables import Contract, Tenant, new_id, utcnow

router = APIRouter(prefix="/api/v1", tags=["contracts"])


def _out(row: Contract, tenant: str) -> ContractOut:
    return ContractOut(
        id=row.id,
        name=row.name,
        tenant=tenant,
        term_start=row.term_start,
        term_end=row.term_end,
        committed_usd=row.committed_usd,
        spec=row.spec,
    )


@router.post("/contracts", status_code=201)
def apply_contract(
    doc: ContractSpec, caller: Caller, store: StoreDep, request: Request
) -> ContractOut:
    """Creates the contract, or updates the one of that name (same tenant only)."""
    require(caller, "operator")
    with store.write() as s:
        tenant = s.scalars(select(Tenant).where(Tenant.name == doc.tenant)).one_or_none()
        if tenant is None:
            raise ApiError(422, f"tenant {doc.tenant!r} does not exist", field="tenant")
        row = s.scalars(select(Contract).where(Contract.name == doc.name)).one_or_none()
        billed, note = _backdating(s, doc, row)
        if row is None:
            row = Contract(id=new_id("ctr"), name=doc.name, tenant_id=tenant.id)
            s.add(row)
        elif row.tenant_id != tenant.id:
            raise ApiError(409, f"contract {doc.name!r} belongs to another tenant", field="name")
        row.term_start, row.term_end = doc.term.start, doc.term.end
        row.committed_usd = doc.committed_usd
        row.spec = doc.model_dump(mode="json")
        row.updated_at = utcnow()
    request.app.state.wake()
    out = _out(row, tenant.name)
    out.billed_at_signing_usd, out.note = billed, note
    return out


BACKDATE_SLACK = timedelta(minutes=5)


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
        raise ApiError(
            422,
            f"term.start {doc.term.start.isoformat()} is in the past: {note}. Apply with "
            "--backdate (backdate: true) to sign it anyway, or start the term now",
            field="term.start",
        )
    return billed, note


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@router.get("/contracts")
def list_contracts(
    caller: Caller,
    store: StoreDep,
    tenant: str | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[ContractOut]:
    with store.read() as s:
        query = select(Contract, Tenant.name).join(Tenant, Tenant.id == Contract.tenant_id)
        if tenant is not None or not caller.is_operator:
            query = query.where(Contract.tenant_id == visible_tenant(s, caller, tenant).id)
        rows, next_cursor = page_of(s, query, Contract.name, limit, cursor)
        return Page(items=[_out(c, t) for c, t in rows], next_cursor=next_cursor)


@router.get("/contracts/{name}")
def get_contract(name: str, caller: Caller, store: StoreDep) -> ContractOut:
    with store.read() as s:
        found = s.execute(
            select(Contract, Tenant.name)
            .join(Tenant, Tenant.id == Contract.tenant_id)
            .where(Contract.name == name)
        ).one_or_none()
        if found is None or not caller.sees_tenant(found[0].tenant_id):
            raise not_found("contract", name)
        return _out(found[0], found[1])
