"""Tenants (operator-managed) and their API keys."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rainier.api.auth import ROLES, Caller, require
from rainier.api.deps import Limit, StoreDep, page_of, visible_tenant
from rainier.api.errors import ApiError, conflict, not_found
from rainier.api.schemas import KeyCreated, KeyIn, KeyOut, Page, TenantOut
from rainier.spec import TenantSpec
from rainier.store.keys import hash_key, new_key
from rainier.store.tables import ApiKey, Tenant, new_id, utcnow

router = APIRouter(prefix="/api/v1", tags=["tenants"])


@router.post("/tenants", status_code=201)
def create_tenant(doc: TenantSpec, caller: Caller, store: StoreDep) -> TenantOut:
    require(caller, "operator")
    try:
        with store.write() as s:
            tenant = Tenant(id=new_id("tnt"), name=doc.name, display_name=doc.display_name)
            s.add(tenant)
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
    key = new_key()
    with store.write() as s:
        tenant = None
        if body.role != "operator":
            if body.tenant is None and caller.is_operator:
                raise ApiError(422, "tenant is required", field="tenant")
            tenant = visible_tenant(s, caller, body.tenant)
        row = ApiKey(
            id=new_id("key"),
            tenant_id=tenant.id if tenant else None,
            role=body.role,
            name=body.name,
            key_hash=hash_key(key),
            prefix=key[:10],
            rate_limit_rpm=body.rate_limit_rpm,
            rate_limit_tpm=body.rate_limit_tpm,
        )
        s.add(row)
    return KeyCreated(**_key_out(row, tenant.name if tenant else None).model_dump(), key=key)


def _keep_an_operator(s: Session, row: ApiKey) -> None:
    """Refuses to revoke the last operator key: without one nothing could be administered
    through the API again (`rainier admin reset-operator` is the offline way back). The live
    operator keys are locked, so two revocations at once cannot both pass this check."""
    live = s.scalars(
        select(ApiKey.id)
        .where(ApiKey.role == "operator", ApiKey.revoked_at.is_(None))
        .with_for_update()
    ).all()
    if set(live) <= {row.id}:
        raise conflict("this is the last operator key: create another before revoking it")


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
        if row.role == "operator" and row.revoked_at is None:
            _keep_an_operator(s, row)
        row.revoked_at = row.revoked_at or utcnow()
        tenant = s.get(Tenant, row.tenant_id) if row.tenant_id else None
        out = _key_out(row, tenant.name if tenant else None)
    request.app.state.auth.forget()
    return out
