"""Shared lookups of the routers: the store, and objects as the caller is allowed to see them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from rainier.api.auth import Principal
from rainier.api.errors import not_found
from rainier.store.db import Store
from rainier.store.tables import Job, Tenant


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(get_store)]


def visible_tenant(s: Session, caller: Principal, name: str | None) -> Tenant:
    """The tenant `name` (default: the caller's own), or 404 if the caller may not see it."""
    if name is None:
        if caller.tenant_id is None:
            raise not_found("tenant", "(none given)")
        tenant = s.get(Tenant, caller.tenant_id)
    else:
        tenant = s.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is None or not caller.sees_tenant(tenant.id):
        raise not_found("tenant", name or "")
    return tenant


def visible_job(s: Session, caller: Principal, ref: str) -> Job:
    """A job by id, or by name (the newest of that name) within the caller's tenant."""
    job = s.get(Job, ref)
    if job is None:
        query = select(Job).where(Job.name == ref).order_by(Job.id.desc()).limit(1)
        if not caller.is_operator:
            query = query.where(Job.tenant_id == caller.tenant_id)
        job = s.scalars(query).first()
    if job is None or not caller.sees_tenant(job.tenant_id):
        raise not_found("job", ref)
    if caller.role == "job" and caller.job_id != job.id:
        raise not_found("job", ref)
    return job


Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]


def page_of(
    s: Session,
    query: Select[Any, Any] | Select[Any],
    key: InstrumentedAttribute[str],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of `query` in ascending `key` order, and the cursor of the next page."""
    if cursor:
        query = query.where(key > cursor)
    rows = list(s.execute(query.order_by(key).limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = str(getattr(rows[-1][0], key.key)) if more and rows else None
    return rows, next_cursor
