"""Uploading a folder so that readers see all of it or none of it.

Object stores have no rename, so a folder cannot be written aside and moved into place as on a
disk. Instead every file is uploaded first and a manifest (`_MANIFEST.json`: each file's size
and SHA-256) last; a folder is *published* only while its manifest is there and every file it
lists has the listed size. An upload cut off midway leaves files without a manifest, which every
reader skips. Replacing a published folder withdraws its manifest before the first new file
lands, and removing one withdraws the manifest before the files go.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fsspec.spec import AbstractFileSystem

from rainier.storage.access import StorageAccess
from rainier.storage.fs import open_url
from rainier.storage.location import join

MANIFEST = "_MANIFEST.json"
FORMAT = 1
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    files: dict[str, FileEntry]

    def to_json(self) -> bytes:
        files = {k: {"size": v.size, "sha256": v.sha256} for k, v in sorted(self.files.items())}
        return json.dumps({"format": FORMAT, "files": files}, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest | None:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                return None
            files = {
                str(name): FileEntry(int(e["size"]), str(e["sha256"]))
                for name, e in data["files"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not files or any(_unsafe(name) for name in files):
            return None
        return cls(files)

    @property
    def digest(self) -> str:
        """Names what was published: a cache keyed by it never serves an older upload."""
        return hashlib.sha256(self.to_json()).hexdigest()


def _unsafe(name: str) -> bool:
    parts = name.split("/")
    return name.startswith("/") or any(p in ("", ".", "..") for p in parts) or name == MANIFEST


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def publish(
    local_dir: Path,
    url: str,
    access: StorageAccess | None = None,
    before_manifest: Callable[[], None] | None = None,
) -> Manifest:
    """Uploads every file under `local_dir` to `url`, then the manifest.

    `before_manifest` runs once the files are up and the manifest is not: the window in which
    an interrupted upload must leave nothing a reader would take."""
    fs, root = open_url(url, access)
    withdraw_manifest(fs, root)
    files: dict[str, FileEntry] = {}
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        name = path.relative_to(local_dir).as_posix()
        if name == MANIFEST:
            continue
        files[name] = FileEntry(path.stat().st_size, sha256_of(path))
        fs.put_file(str(path), f"{root}/{name}")
    if not files:
        raise ValueError(f"{local_dir} holds no files to publish")
    if before_manifest is not None:
        before_manifest()
    manifest = Manifest(files)
    fs.pipe_file(f"{root}/{MANIFEST}", manifest.to_json())
    return manifest


def withdraw_manifest(fs: AbstractFileSystem, root: str) -> None:
    if fs.exists(f"{root}/{MANIFEST}"):
        fs.rm_file(f"{root}/{MANIFEST}")


def read_manifest(url: str, access: StorageAccess | None = None) -> Manifest | None:
    """The manifest of a published folder whose files are all there; None otherwise."""
    fs, root = open_url(url, access)
    return _complete_manifest(fs, root)


def _complete_manifest(fs: AbstractFileSystem, root: str) -> Manifest | None:
    try:
        manifest = Manifest.from_json(fs.cat_file(f"{root}/{MANIFEST}"))
    except FileNotFoundError:
        return None
    if manifest is None:
        return None
    sizes = _sizes(fs, root)
    if all(sizes.get(name) == entry.size for name, entry in manifest.files.items()):
        return manifest
    return None


def _sizes(fs: AbstractFileSystem, root: str) -> dict[str, int]:
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    prefix = root.rstrip("/") + "/"
    return {
        path[len(prefix) :]: int(info.get("size") or 0)
        for path, info in found.items()
        if path.startswith(prefix) and info.get("type") != "directory"
    }


def children(url: str, access: StorageAccess | None = None) -> list[str]:
    """Names of the folders directly under `url` (published or not)."""
    fs, root = open_url(url, access)
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        return []
    return sorted(
        str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
        for e in entries
        if e.get("type") == "directory"
    )


def is_published(url: str, access: StorageAccess | None = None) -> bool:
    return read_manifest(url, access) is not None


def remove(url: str, access: StorageAccess | None = None) -> None:
    """Deletes a folder, manifest first: a reader sees it whole or not at all, never half."""
    fs, root = open_url(url, access)
    withdraw_manifest(fs, root)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def child_url(url: str, name: str) -> str:
    return join(url, name)
