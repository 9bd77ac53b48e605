"""Tenants and API keys: creating them, revoking keys, the installation's first operator key."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.spec import TenantSpec
from rainier.store.keys import hash_key, new_key
from rainier.store.tables import ApiKey, Meta, Tenant, new_id, utcnow

from .errors import Refused


def create_tenant(s: Session, doc: TenantSpec) -> Tenant:
    """The caller turns an IntegrityError at commit (the name is taken) into a 409."""
    tenant = Tenant(id=new_id("tnt"), name=doc.name, display_name=doc.display_name)
    s.add(tenant)
    return tenant


def create_key(
    s: Session,
    tenant: Tenant | None,
    role: str,
    name: str,
    rate_limit_rpm: int | None = None,
    rate_limit_tpm: int | None = None,
) -> tuple[ApiKey, str]:
    """A new key of `role` (in `tenant`, none for an operator); the key itself is returned
    once and only its hash is kept."""
    key = new_key()
    row = ApiKey(
        id=new_id("key"),
        tenant_id=tenant.id if tenant else None,
        role=role,
        name=name,
        key_hash=hash_key(key),
        prefix=key[:10],
        rate_limit_rpm=rate_limit_rpm,
        rate_limit_tpm=rate_limit_tpm,
    )
    s.add(row)
    return row, key


def revoke_key(s: Session, row: ApiKey) -> None:
    """Revokes the key (again, harmlessly); never the last live operator key, without which
    nothing could be administered through the API again (`rainier admin reset-operator` is the
    offline way back). The live operator keys are locked, so two revocations at once cannot
    both pass this check."""
    if row.role == "operator" and row.revoked_at is None:
        live = s.scalars(
            select(ApiKey.id)
            .where(ApiKey.role == "operator", ApiKey.revoked_at.is_(None))
            .with_for_update()
        ).all()
        if set(live) <= {row.id}:
            raise Refused(409, "this is the last operator key: create another before revoking it")
    row.revoked_at = row.revoked_at or utcnow()


def initialise(s: Session) -> str:
    """Marks the installation initialised and creates its first operator key; the caller
    turns an IntegrityError (initialised before) into a 409."""
    s.add(Meta(key="initialized", value="operator key created"))
    s.flush()
    _, key = create_key(s, None, "operator", "operator")
    return key
