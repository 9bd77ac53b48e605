"""Downloading from the store into a cache on this node, whole or not at all.

A download goes into a temporary folder beside its final place, is checked (sizes, and for a
published folder each file's SHA-256 against its manifest), then renamed into place; a folder in
the cache is therefore always a whole copy, and is used again as long as what it copies has not
changed (its key holds the manifest's digest, or for a plain prefix its listing's).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from rainier.storage.access import StorageAccess
from rainier.storage.fs import StorageError, open_url
from rainier.storage.location import normalize
from rainier.storage.publish import MANIFEST, Manifest, read_manifest, sha256_of

CACHE_ENV = "RAINIER_STORAGE_CACHE"


def default_cache_dir() -> Path:
    """`$RAINIER_STORAGE_CACHE`, else the task's own work folder (the one place of a node a
    sandboxed task may write besides its checkpoints), else the user's cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.environ.get("RAINIER_WORKDIR"):
        return Path(os.environ["RAINIER_WORKDIR"]) / ".cache" / "storage"
    return Path.home() / ".cache" / "rainier" / "storage"


def fetch_published(
    url: str, cache_dir: Path, access: StorageAccess | None = None, *, name: str | None = None
) -> Path:
    """A local copy of the published folder `url` under `cache_dir` (named `name`, or after the
    URL and what was published there); StorageError when nothing whole is published there."""
    url = normalize(url)
    manifest = read_manifest(url, access)
    if manifest is None:
        raise StorageError(f"{url} holds no complete upload (no manifest, or files missing)")
    dest = cache_dir / (name or _key(url, manifest.digest))
    if _whole(dest, manifest):
        return dest
    fs, root = open_url(url, access)

    def download(tmp: Path) -> None:
        for rel, entry in manifest.files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{rel}", str(target))
            if target.stat().st_size != entry.size or sha256_of(target) != entry.sha256:
                raise StorageError(f"{url}/{rel} changed while it was downloaded")
        (tmp / MANIFEST).write_bytes(manifest.to_json())

    return _into_place(dest, download)


def fetch_tree(url: str, cache_dir: Path, access: StorageAccess | None = None) -> Path:
    """A local copy of everything under `url` (an object or a prefix, e.g. a dataset that any S3
    client uploaded, with no manifest); the path of the copied file or folder."""
    url = normalize(url)
    fs, root = open_url(url, access)
    try:
        if fs.isfile(root):
            listing = {"": int(fs.info(root).get("size") or 0)}
        else:
            found = fs.find(root, detail=True)
            prefix = root.rstrip("/") + "/"
            listing = {
                p[len(prefix) :]: int(i.get("size") or 0)
                for p, i in found.items()
                if p.startswith(prefix) and i.get("type") != "directory"
            }
    except FileNotFoundError:
        listing = {}
    if not listing:
        raise StorageError(f"{url} does not exist or holds no files")
    digest = hashlib.sha256(json.dumps(sorted(listing.items())).encode()).hexdigest()
    dest = cache_dir / _key(url, digest)
    single = "" in listing
    leaf = url.rsplit("/", 1)[-1]
    if (dest / ".complete").exists():
        return dest / leaf if single else dest

    def download(tmp: Path) -> None:
        for rel, size in listing.items():
            target = tmp / (rel or leaf)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{rel}" if rel else root, str(target))
            if target.stat().st_size != size:
                raise StorageError(f"{url}/{rel} changed while it was downloaded")
        (tmp / ".complete").write_text(url + "\n")

    placed = _into_place(dest, download)
    return placed / leaf if single else placed


def _key(url: str, digest: str) -> str:
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{digest[:16]}"


def _whole(dest: Path, manifest: Manifest) -> bool:
    """A cached copy counts only if it holds the manifest it was checked against."""
    try:
        return (dest / MANIFEST).read_bytes() == manifest.to_json()
    except OSError:
        return False


def _into_place(dest: Path, download: Callable[[Path], None]) -> Path:
    """Runs `download` into a fresh temporary folder and renames it to `dest`; a process that
    lost the race to another downloading the same thing keeps the other's copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        download(tmp)
        if dest.exists():
            stale = dest.parent / f".old-{dest.name}-{os.getpid()}"
            with contextlib.suppress(OSError):
                dest.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
