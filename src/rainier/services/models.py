"""Models: registering the next version of a tenant's model folder."""

from __future__ import annotations

from sqlalchemy.orm import Session

from rainier.control.ownership import ModelRoots, NotOwnedError, owned_model_dir
from rainier.control.registry import ModelRefError, register_model
from rainier.store.tables import Model, Tenant

from .errors import Refused


def register(
    s: Session, roots: ModelRoots, tenant: Tenant, name: str, path: str, job_id: str | None
) -> Model:
    """The next version of `name` for a folder the tenant owns: under its storage prefix, or
    exported by one of its jobs. The caller retries on IntegrityError (a concurrent
    registration of the same name took the version)."""
    try:
        folder = owned_model_dir(s, roots, tenant.id, tenant.name, path)
        return register_model(s, tenant.id, name, folder.path, job_id or folder.job_id)
    except (ModelRefError, NotOwnedError) as exc:
        raise Refused(422, str(exc), field="path") from None
