"""Training data named by storage URL: fetched into this node's cache before the corpus is
prepared, so `--data` takes `s3://bucket/tenant/datasets/notes/` beside local paths."""

from __future__ import annotations

from pathlib import Path

from rainier.storage.access import StorageAccess
from rainier.storage.cache import fetch_tree
from rainier.storage.fs import StorageError
from rainier.storage.location import StorageUrlError, is_url


def local_inputs(
    items: list[str], cache_dir: Path, access: StorageAccess | None = None
) -> list[str]:
    """`items` with every URL replaced by the local copy of what it names; ValueError names
    the URL that cannot be fetched."""
    out: list[str] = []
    for item in items:
        if not is_url(item):
            out.append(item)
            continue
        try:
            out.append(str(fetch_tree(item, cache_dir, access or StorageAccess.from_env())))
        except (StorageError, StorageUrlError, OSError) as exc:
            raise ValueError(f"cannot fetch {item}: {exc}") from None
    return out
