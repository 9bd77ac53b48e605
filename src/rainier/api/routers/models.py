"""Models: versioned model folders of a tenant, registered by its users or by the job that
trained them (with the job's own token)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rainier.api.auth import Caller, Principal, require
from rainier.api.deps import StoreDep, visible_job, visible_tenant
from rainier.api.errors import ApiError, conflict, not_found
from rainier.api.schemas import Page
from rainier.config import Settings
from rainier.control.deployments import ModelRefError, find_model, register_model
from rainier.control.ownership import ModelRoots, NotOwnedError, owned_model_dir
from rainier.limits import MAX_PATH_CHARS
from rainier.spec import Name
from rainier.store.tables import Model, Tenant

router = APIRouter(prefix="/api/v1", tags=["models"])
REF = re.compile(r"^(?P<name>[^:]+)(:(?P<version>[0-9]+))?$")
REGISTER_TRIES = 5


class ModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="an HF-format model folder the tenant owns: an absolute path under its "
        "storage prefix or exported by one of its jobs, or a storage URL under its prefix "
        "(<storage>/<tenant>/...) where a whole upload is published",
    )
    job_id: str | None = Field(None, max_length=40, description="the job that produced it")
    tenant: Name | None = Field(None, description="defaults to the caller's tenant")


class ModelOut(BaseModel):
    id: str
    name: str
    version: int
    tenant: str
    path: str
    job_id: str | None
    created_at: datetime


def model_out(row: Model, tenant: str) -> ModelOut:
    return ModelOut(
        id=row.id,
        name=row.name,
        version=row.version,
        tenant=tenant,
        path=row.path,
        job_id=row.job_id,
        created_at=row.created_at,
    )


def _owner(s: Session, caller: Principal, body: ModelIn) -> tuple[Tenant, str | None]:
    if body.tenant is None and caller.tenant_id is None:
        raise ApiError(422, "an operator key must name the model's tenant", field="tenant")
    tenant = visible_tenant(s, caller, body.tenant)
    job_id = body.job_id or caller.job_id
    if job_id is not None:
        job = visible_job(s, caller, job_id)
        if job.tenant_id != tenant.id:
            raise ApiError(422, "the job belongs to another tenant than the model", field="job_id")
        job_id = job.id
    return tenant, job_id


def model_roots(settings: Settings) -> ModelRoots:
    return ModelRoots(
        storage=settings.storage_dir,
        checkpoints=settings.checkpoints_dir,
        store=settings.storage_config,
    )


@router.post("/models", status_code=201)
def create_model(body: ModelIn, caller: Caller, store: StoreDep, request: Request) -> ModelOut:
    """Registers the next version of `name`: 1 for a new name, then counting up. The folder
    must be the tenant's own: under its storage prefix, or exported by one of its jobs."""
    require(caller, "operator", "admin", "member", "job")
    roots = model_roots(request.app.state.settings)
    for _ in range(REGISTER_TRIES):
        try:
            with store.write() as s:
                tenant, job_id = _owner(s, caller, body)
                folder = owned_model_dir(s, roots, tenant.id, tenant.name, body.path)
                row = register_model(s, tenant.id, body.name, folder.path, job_id or folder.job_id)
                return model_out(row, tenant.name)
        except (ModelRefError, NotOwnedError) as exc:
            raise ApiError(422, str(exc), field="path") from None
        except IntegrityError:
            continue
    raise conflict(f"model {body.name!r} is being registered concurrently; try again")


@router.get("/models")
def list_models(
    caller: Caller,
    store: StoreDep,
    name: str | None = None,
    tenant: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Page[ModelOut]:
    """Every version, newest first; pass `next_cursor` back as `cursor` for the next page."""
    with store.read() as s:
        query = select(Model, Tenant.name).join(Tenant, Tenant.id == Model.tenant_id)
        if tenant is not None:
            query = query.where(Model.tenant_id == visible_tenant(s, caller, tenant).id)
        elif not caller.is_operator:
            query = query.where(Model.tenant_id == caller.tenant_id)
        if name:
            query = query.where(Model.name == name)
        if cursor:
            query = query.where(Model.id < cursor)
        rows = s.execute(query.order_by(Model.id.desc()).limit(limit + 1)).all()
    items = [model_out(m, t) for m, t in rows[:limit]]
    return Page(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


@router.get("/models/{ref}")
def get_model(ref: str, caller: Caller, store: StoreDep, tenant: str | None = None) -> ModelOut:
    """`name` (its newest version) or `name:version`."""
    match = REF.fullmatch(ref)
    if match is None:
        raise not_found("model", ref)
    with store.read() as s:
        if tenant is None and caller.tenant_id is None:
            raise ApiError(422, "an operator key must name the model's tenant", field="tenant")
        owner = visible_tenant(s, caller, tenant)
        version = match["version"]
        row = find_model(s, owner.id, match["name"], int(version) if version else None)
        if row is None:
            raise not_found("model", ref)
        return model_out(row, owner.name)
