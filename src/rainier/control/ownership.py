"""Which model folders a tenant owns: the only server paths it may register or deploy.

A tenant owns what is under its storage prefix (`$RAINIER_HOME/storage/<tenant>/`, where its
uploads go) and what one of its own jobs produced (`$RAINIER_HOME/checkpoints/<job id>/`, where
a training job exports). Anything else on the server, another tenant's export included, is not
its to name. Paths are compared after resolving symbolic links and `..`, and the folder that is
registered is the resolved one, so a link changed later cannot point a model elsewhere.

A path outside what the tenant owns is refused with the same answer whether it exists or not,
so the registry cannot be used to probe the server's filesystem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from rainier.spec import MAX_PATH_CHARS, MAX_PATH_COMPONENT_CHARS
from rainier.store.tables import Job


class NotOwnedError(ValueError):
    """A model folder the tenant may not name; the message says what it may name instead."""


@dataclass(frozen=True)
class ModelRoots:
    """Where owned folders live: per tenant under `storage`, per job under `checkpoints`."""

    storage: Path
    checkpoints: Path

    def tenant_prefix(self, tenant: str) -> Path:
        return self.storage / tenant


@dataclass(frozen=True)
class OwnedFolder:
    path: str
    job_id: str | None


def owned_model_dir(
    s: Session, roots: ModelRoots, tenant_id: str, tenant: str, path: str
) -> OwnedFolder:
    """The resolved folder `path` names, and the job that produced it (None for one under the
    tenant's prefix); NotOwnedError when the tenant does not own it or it is not a folder."""
    if len(path) > MAX_PATH_CHARS or any(
        len(part) > MAX_PATH_COMPONENT_CHARS for part in path.split("/")
    ):
        raise NotOwnedError(
            f"a model folder path has at most {MAX_PATH_CHARS} characters and "
            f"{MAX_PATH_COMPONENT_CHARS} per component"
        )
    if "\0" in path or not os.path.isabs(path):
        raise NotOwnedError(f"a model folder path must be absolute, not {path!r}")
    real = Path(os.path.realpath(path))
    prefix = Path(os.path.realpath(roots.tenant_prefix(tenant)))
    checkpoints = Path(os.path.realpath(roots.checkpoints))
    job_id = None
    if not real.is_relative_to(prefix):
        job_id = _producing_job(s, checkpoints, real, tenant_id)
        if job_id is None:
            raise NotOwnedError(
                f"{path!r} is not a folder of this tenant: name one under its storage prefix "
                f"{prefix} or one that a job of the tenant exported"
            )
    try:
        is_dir = real.is_dir()
    except OSError:
        is_dir = False
    if not is_dir:
        raise NotOwnedError(f"model folder {path!r} does not exist")
    return OwnedFolder(str(real), job_id)


def _producing_job(s: Session, checkpoints: Path, real: Path, tenant_id: str) -> str | None:
    if not real.is_relative_to(checkpoints) or real == checkpoints:
        return None
    job_id = real.relative_to(checkpoints).parts[0]
    job = s.get(Job, job_id)
    return job.id if job is not None and job.tenant_id == tenant_id else None
