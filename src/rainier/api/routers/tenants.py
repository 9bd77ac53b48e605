"""Tenants (operator-managed) and their API keys."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rainier.api.auth import ROLES, Caller, require
from rainier.api.deps import Limit, StoreDep, page_of, visible_tenant
from rainier.api.errors import ApiError, conflict, not_found
from rainier.api.schemas import KeyCreated, KeyIn, KeyOut, Page, TenantOut
from rainier.services import tenants as service
from rainier.spec import TenantSpec
from rainier.store.tables import ApiKey, Tenant

router = APIRouter(prefix="/api/v1", tags=["tenants"])


@router.post("/tenants", status_code=201)
def create_tenant(doc: TenantSpec, caller: Caller, store: StoreDep) -> TenantOut:
    require(caller, "operator")
    try:
        with store.write() as s:
            tenant = service.create_tenant(s, doc)
    except IntegrityError:
        raise conflict(f"tenant {doc.name!r} already exists") from None
    return TenantOut.model_validate(tenant)


@router.get("/tenants")
def list_tenants(
    caller: Caller, store: StoreDep, limit: Limit = 100, cursor: str | None = None
) -> Page[TenantOut]:
    with store.read() as s:
        query = select(Tenant)
        if not caller.is_operator:
            query = query.where(Tenant.id == caller.tenant_id)
        rows, next_cursor = page_of(s, query, Tenant.name, limit, cursor)
        return Page(items=[TenantOut.model_validate(t) for (t,) in rows], next_cursor=next_cursor)


@router.get("/tenants/{name}")
def get_tenant(name: str, caller: Caller, store: StoreDep) -> TenantOut:
    with store.read() as s:
        return TenantOut.model_validate(visible_tenant(s, caller, name))


@router.post("/keys", status_code=201)
def create_key(body: KeyIn, caller: Caller, store: StoreDep, request: Request) -> KeyCreated:
    require(caller, "operator", "admin")
    if body.role not in ROLES:
        raise ApiError(422, f"role must be one of {', '.join(ROLES)}", field="role")
    if body.role == "operator":
        require(caller, "operator")
        if body.tenant is not None:
            raise ApiError(422, "operator keys belong to no tenant", field="tenant")
    with store.write() as s:
        tenant = None
        if body.role != "operator":
            if body.tenant is None and caller.is_operator:
                raise ApiError(422, "tenant is required", field="tenant")
            tenant = visible_tenant(s, caller, body.tenant)
        row, key = service.create_key(
            s, tenant, body.role, body.name, body.rate_limit_rpm, body.rate_limit_tpm
        )
    return KeyCreated(**_key_out(row, tenant.name if tenant else None).model_dump(), key=key)


def _key_out(row: ApiKey, tenant: str | None) -> KeyOut:
    return KeyOut(
        id=row.id,
        tenant=tenant,
        role=row.role,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        rate_limit_rpm=row.rate_limit_rpm,
        rate_limit_tpm=row.rate_limit_tpm,
    )


@router.get("/keys")
def list_keys(
    caller: Caller,
    store: StoreDep,
    tenant: str | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[KeyOut]:
    require(caller, "operator", "admin")
    with store.read() as s:
        query = select(ApiKey, Tenant.name).outerjoin(Tenant, Tenant.id == ApiKey.tenant_id)
        if tenant is not None or not caller.is_operator:
            query = query.where(ApiKey.tenant_id == visible_tenant(s, caller, tenant).id)
        rows, next_cursor = page_of(s, query, ApiKey.id, limit, cursor)
        return Page(items=[_key_out(k, t) for k, t in rows], next_cursor=next_cursor)


@router.delete("/keys/{key_id}")
def revoke_key(key_id: str, caller: Caller, store: StoreDep, request: Request) -> KeyOut:
    require(caller, "operator", "admin")
    with store.write() as s:
        row = s.get(ApiKey, key_id)
        if row is None or not caller.sees_tenant(row.tenant_id):
            raise not_found("key", key_id)
        service.revoke_key(s, row)
        tenant = s.get(Tenant, row.tenant_id) if row.tenant_id else None
        out = _key_out(row, tenant.name if tenant else None)
    request.app.state.auth.forget()
    return out
