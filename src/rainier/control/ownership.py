"""Which model folders a tenant owns: the only server paths it may register or deploy.

A tenant owns what is under its storage prefix (`$RAINIER_HOME/storage/<tenant>/`, where its
uploads go) and what one of its own jobs produced (`$RAINIER_HOME/checkpoints/<job id>/`, where
a training job exports). Anything else on the server, another tenant's export included, is not
its to name. Paths are compared after resolving symbolic links and `..`, and the folder that is
registered is the resolved one, so a link changed later cannot point a model elsewhere.

A path outside what the tenant owns is refused with the same answer whether it exists or not,
so the registry cannot be used to probe the server's filesystem.

A model may also be a storage URL (`rainier.storage`): the tenant owns what lies under its
prefix `<storage>/<tenant>/`, and a job's export there (`<tenant>/jobs/<job id>/export`) is that
job's. Such a URL is registered only once a whole upload is published there (its manifest), so a
deployment never downloads a half-uploaded model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from rainier.limits import MAX_PATH_CHARS, MAX_PATH_COMPONENT_CHARS
from rainier.storage.access import StorageConfig
from rainier.storage.location import StorageUrlError, is_url, is_within, normalize, relative
from rainier.storage.publish import read_manifest
from rainier.store.tables import Job


class NotOwnedError(ValueError):
    """A model folder the tenant may not name; the message says what it may name instead."""


@dataclass(frozen=True)
class ModelRoots:
    """Where owned folders live: per tenant under `storage`, per job under `checkpoints`."""

    storage: Path
    checkpoints: Path
    store: StorageConfig | None = None

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
    if is_url(path):
        return owned_model_url(s, roots, tenant_id, tenant, path)
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


def owned_model_url(
    s: Session, roots: ModelRoots, tenant_id: str, tenant: str, url: str
) -> OwnedFolder:
    """The canonical form of `url` and the job whose export it is (None for another place of
    the tenant's prefix); NotOwnedError unless it lies under the prefix and is published whole."""
    store = roots.store or StorageConfig.local(roots.storage)
    prefix = store.tenant_url(tenant)
    try:
        canonical = normalize(url)
        mine = is_within(canonical, prefix) and canonical != normalize(prefix)
    except StorageUrlError as exc:
        raise NotOwnedError(str(exc)) from None
    if not mine:
        raise NotOwnedError(
            f"{url!r} is not a place of this tenant: name one under its storage prefix {prefix}"
        )
    job_id = None
    parts = relative(canonical, prefix).split("/")
    if len(parts) > 2 and parts[0] == "jobs":
        job = s.get(Job, parts[1])
        job_id = job.id if job is not None and job.tenant_id == tenant_id else None
    try:
        published = read_manifest(canonical, store.access) is not None
    except (OSError, ValueError) as exc:
        raise NotOwnedError(f"cannot read {canonical}: {exc}") from None
    if not published:
        raise NotOwnedError(
            f"model {canonical} is not uploaded whole: its manifest (_MANIFEST.json) is "
            "missing or its files are not all there"
        )
    return OwnedFolder(canonical, job_id)


def _producing_job(s: Session, checkpoints: Path, real: Path, tenant_id: str) -> str | None:
    if not real.is_relative_to(checkpoints) or real == checkpoints:
        return None
    job_id = real.relative_to(checkpoints).parts[0]
    job = s.get(Job, job_id)
    return job.id if job is not None and job.tenant_id == tenant_id else None
