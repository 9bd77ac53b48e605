"""A finished task's log, copied to its tenant's storage beside the job's checkpoints.

Run on the task's node, outside its sandbox, once the task has ended: with storage by URL the
node's own log folder is no place anyone else can read, so `<tenant>/jobs/<job>/logs/rank-N.log`
in the store is where a finished job's output stays. Uploaded with the task's own storage
variables (its tenant's keys where there are some); without `RAINIER_STORAGE_URL` (storage is
the control plane's own folder) there is nothing to do. An upload that fails is said in the log
and never changes how the task ended.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from rainier.storage.access import URL_ENV, StorageAccess
from rainier.storage.location import join


def log_url(env: Mapping[str, str]) -> str | None:
    storage, job, rank = env.get(URL_ENV), env.get("RAINIER_JOB_ID"), env.get("RAINIER_RANK")
    if not (storage and job and rank and rank.isdigit()):
        return None
    return join(storage, "jobs", job, "logs", f"rank-{rank}.log")


def archive_log(log_path: Path, env: Mapping[str, str]) -> str | None:
    """Uploads `log_path` (one object, written whole) and returns its URL; None when there is
    no storage URL or the upload failed."""
    url = log_url(env)
    if url is None or not log_path.is_file():
        return None
    from rainier.storage.fs import open_url  # fsspec only where there is something to upload

    try:
        fs, path = open_url(url, StorageAccess.from_env(env))
        fs.put_file(str(log_path), path)
    except Exception as exc:  # any failure of the store: the task's ending stands as it is
        print(f"rainier: could not archive the log to {url}: {exc}", file=sys.stderr, flush=True)
        return None
    return url
