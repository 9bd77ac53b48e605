"""The model registry: a tenant's versioned model folders, and how a deployment's `model`
reference resolves to one."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rainier.spec import NAME_PATTERN
from rainier.store.tables import (
    Model,
    new_id,
)

_VERSIONED = re.compile(r"^(?P<name>[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(:(?P<version>[0-9]+))?$")


class ModelRefError(ValueError):
    """A model reference that names nothing the tenant has; the message says which."""


def register_model(
    s: Session, tenant_id: str, name: str, path: str, job_id: str | None = None
) -> Model:
    """The next version of `name` in the tenant, for a folder the caller checked the tenant
    owns (`rainier.control.ownership`); the caller retries on IntegrityError, which two
    concurrent registrations of one name cause on databases without a write lock."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ModelRefError(f"model name {name!r} must be lowercase letters, digits and '-'")
    last = s.scalar(
        select(func.max(Model.version)).where(Model.tenant_id == tenant_id, Model.name == name)
    )
    row = Model(
        id=new_id("mdl"),
        tenant_id=tenant_id,
        name=name,
        version=(last or 0) + 1,
        path=path,
        job_id=job_id,
    )
    s.add(row)
    s.flush()
    return row


def find_model(s: Session, tenant_id: str, name: str, version: int | None = None) -> Model | None:
    query = select(Model).where(Model.tenant_id == tenant_id, Model.name == name)
    if version is not None:
        query = query.where(Model.version == version)
    return s.scalars(query.order_by(Model.version.desc()).limit(1)).first()


@dataclass(frozen=True)
class ResolvedModel:
    ref: str
    path: str


def resolve_model(
    s: Session, tenant_id: str, ref: str, owned: Callable[[str], str]
) -> ResolvedModel:
    """`name[:version]` of the tenant's registry (newest version when none is given), or an
    absolute path of a folder the tenant owns (`owned` answers it resolved, or raises).
    Resolved once, when the deployment is applied: a new model version reaches a deployment
    when the deployment is applied again, never behind its back."""
    if "/" in ref:
        path = owned(ref)
        return ResolvedModel(path, path)
    match = _VERSIONED.fullmatch(ref)
    if match is None:
        raise ModelRefError(f"{ref!r} is neither a model name[:version] nor an absolute path")
    name, version = match["name"], match["version"]
    row = find_model(s, tenant_id, name, int(version) if version else None)
    if row is None:
        raise ModelRefError(f"model {ref!r} is not registered in this tenant")
    return ResolvedModel(f"{row.name}:{row.version}", row.path)
