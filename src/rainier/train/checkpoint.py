"""Checkpoints a preempted or crashed run can always resume from.

A checkpoint is a folder `step-NNNNNNNNN/` holding `state.pt` and `meta.json`. It is written
under a temporary name, every file fsynced, `meta.json` (the sizes of the other files) written
last, then renamed into place and the parent fsynced: a reader sees either a whole checkpoint or
none. A folder whose meta is missing or whose files disagree with it is torn and skipped, and a
checkpoint that fails to load falls back to the one before it.

With a storage URL (`Remote`), every checkpoint committed on disk is then published there
(`rainier.storage.publish`: files first, manifest last), and a run resumes from the newest
checkpoint published whole, downloading it where its disk has no copy: a node that replaces a
lost one needs no shared filesystem, and an upload cut off midway is never resumed from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rainier.storage.access import StorageAccess
from rainier.storage.cache import fetch_published
from rainier.storage.fs import StorageError
from rainier.storage.location import join
from rainier.storage.publish import children, publish, read_manifest, remove

FORMAT_VERSION = 1
STATE_FILE = "state.pt"
META_FILE = "meta.json"
_NAME = re.compile(r"^step-(\d{9})$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:09d}"


def save(
    root: Path,
    step: int,
    state: dict[str, Any],
    extra_files: list[Path] | None = None,
    keep: int | None = None,
    before_commit: Callable[[], None] | None = None,
    remote: Remote | None = None,
    before_publish: Callable[[], None] | None = None,
) -> Path:
    """Write `state` (plus copies of `extra_files`) as the checkpoint of `step`, atomically,
    then publish it to `remote` when there is one.

    `before_commit` runs once the data is on disk but before the checkpoint is made visible:
    the window in which a crash must leave the previous checkpoints untouched.
    `before_publish` is the same window of the upload: files up, manifest not yet.
    """
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-step-{step:09d}-{os.getpid()}"
    tmp.mkdir()
    with (tmp / STATE_FILE).open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    for src in extra_files or []:
        shutil.copyfile(src, tmp / src.name)
        _fsync_file(tmp / src.name)
    if before_commit is not None:
        before_commit()
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
    meta = {"format": FORMAT_VERSION, "step": step, "files": files}
    with (tmp / META_FILE).open("w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    final = step_dir(root, step)
    if final.exists():
        old = root / f".tmp-step-{step:09d}-replaced-{os.getpid()}"
        final.rename(old)
        shutil.rmtree(old)
    tmp.rename(final)
    _fsync_dir(root)
    if keep is not None:
        prune(root, keep)
    if remote is not None:
        remote.upload(final, before_publish)
        if keep is not None:
            remote.prune(keep)
    return final


def is_complete(path: Path) -> bool:
    match = _NAME.match(path.name)
    if not match or not path.is_dir():
        return False
    try:
        meta = json.loads((path / META_FILE).read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("step") != int(match.group(1)):
            return False
        files: dict[str, int] = meta["files"]
        return STATE_FILE in files and all(
            (path / name).stat().st_size == size for name, size in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def complete(root: Path) -> list[Checkpoint]:
    """Whole checkpoints under `root`, newest first."""
    if not root.is_dir():
        return []
    found = [
        Checkpoint(p, int(m.group(1)))
        for p in root.iterdir()
        if (m := _NAME.match(p.name)) and is_complete(p)
    ]
    return sorted(found, key=lambda c: c.step, reverse=True)


def load_latest(
    root: Path, remote: Remote | None = None
) -> tuple[Checkpoint, dict[str, Any]] | None:
    """The newest checkpoint that loads. Memory-mapped: the ranks of a node share one copy in
    the page cache instead of each holding weights and optimizer state in its own memory.

    With a `remote`, the store is the truth: the newest checkpoint published whole there, from
    this disk where it holds a whole copy and downloaded otherwise. A newer one on this disk
    only (its upload cut off) is passed over, so that every node of a gang, whatever its own
    disk holds, resumes from the same step."""
    candidates = complete(root) if remote is None else remote.copies(root)
    for ckpt in candidates:
        try:
            state = torch.load(
                ckpt.path / STATE_FILE, map_location="cpu", weights_only=True, mmap=True
            )
        except Exception as exc:
            print(f"rainier.train: skipping unreadable {ckpt.path}: {exc}", file=sys.stderr)
            continue
        return ckpt, state
    return None


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` whole checkpoints; torn folders go too."""
    whole = complete(root)
    for ckpt in whole[keep:]:
        shutil.rmtree(ckpt.path, ignore_errors=True)
    newest = whole[0].step if whole else -1
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and int(m.group(1)) < newest and not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)


@dataclass(frozen=True)
class Remote:
    """Checkpoints published under a storage URL, one folder `step-NNNNNNNNN/` each."""

    url: str
    access: StorageAccess | None = None

    @classmethod
    def at(cls, url: str | None) -> Remote | None:
        """The remote at `url`, reached with this process's storage settings (environment)."""
        return None if url is None else cls(url, StorageAccess.from_env())

    def step_url(self, step: int) -> str:
        return join(self.url, f"step-{step:09d}")

    def steps(self) -> list[int]:
        """Steps published whole, newest first."""
        found = [
            int(m.group(1)) for name in children(self.url, self.access) if (m := _NAME.match(name))
        ]
        return sorted(
            (s for s in found if read_manifest(self.step_url(s), self.access) is not None),
            reverse=True,
        )

    def upload(self, folder: Path, before_manifest: Callable[[], None] | None = None) -> None:
        step = int(_NAME.match(folder.name).group(1))  # type: ignore[union-attr]
        publish(folder, self.step_url(step), self.access, before_manifest)

    def prune(self, keep: int) -> None:
        """Removes all but the newest `keep` published checkpoints, and torn uploads older
        than the newest published one."""
        whole = self.steps()
        newest = whole[0] if whole else -1
        for name in children(self.url, self.access):
            m = _NAME.match(name)
            if m is None:
                continue
            step = int(m.group(1))
            if step in whole[keep:] or (step < newest and step not in whole):
                remove(self.step_url(step), self.access)

    def copies(self, root: Path) -> Iterator[Checkpoint]:
        """Local copies in `root` of the checkpoints published whole, newest first, each
        downloaded only when it is wanted and not already there; one whose download fails is
        skipped for the next older."""
        for step in self.steps():
            local = step_dir(root, step)
            if not is_complete(local):
                try:
                    fetch_published(self.step_url(step), root, self.access, name=local.name)
                except (StorageError, OSError) as exc:
                    print(f"rainier.train: cannot fetch checkpoint {step}: {exc}", file=sys.stderr)
                    continue
            if is_complete(local):
                yield Checkpoint(local, step)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
