"""Contracts: signed by the operator for a tenant; the tenant's keys may read them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select

from rainier.api.auth import Caller, require
from rainier.api.deps import Limit, StoreDep, page_of, visible_tenant
from rainier.api.errors import not_found
from rainier.api.schemas import ContractOut, Page
from rainier.services.contracts import apply_contract as apply_contract_doc
from rainier.spec import ContractSpec
from rainier.store.tables import Contract, Tenant

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
        row, tenant, billed, note = apply_contract_doc(s, doc)
    request.app.state.wake()
    out = _out(row, tenant.name)
    out.billed_at_signing_usd, out.note = billed, note
    return out


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
