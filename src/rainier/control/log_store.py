"""Task output the nodes send over HTTP, kept where `rainier logs` reads it.

A node's shipper sends its task's output in batches, each with the offset it starts at in that
attempt's output. Every attempt of a rank appends to the rank's one log file, so the first
batch of an attempt notes where in the file that attempt begins (`rank-N.attempt-K.base`).
A batch is written only where it continues what is stored: a retried batch the control plane
already has is acknowledged without writing it twice, one that would leave a gap is refused
with the offset the shipper must resume from, and one of an attempt that a later attempt
followed is refused (the reconciler starts an attempt only once the last one's tasks ended and
sent their output, so that is a stray). Writers of one file (API workers, servers on one
home) take turns on a lock of the file.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path


class LogGap(Exception):
    """A batch that starts past what is stored: `expected` is where the attempt's stored
    output ends, from which the shipper must send again."""

    def __init__(self, expected: int):
        super().__init__(f"this attempt's output is stored up to offset {expected}")
        self.expected = expected


class LogSuperseded(Exception):
    """A batch of an attempt after which another attempt already wrote: it is not stored
    (its output would land inside the later attempt's)."""


@dataclass(frozen=True)
class TaskLogs:
    """The control plane's folder of task logs: `<logs_dir>/<job>/rank-<N>.log`."""

    logs_dir: Path

    def path(self, job_id: str, rank: int) -> Path:
        return self.logs_dir / job_id / f"rank-{rank}.log"

    def append(self, job_id: str, rank: int, attempt: int, offset: int, data: bytes) -> int:
        """Stores `data`, which starts at `offset` of the attempt's output; answers the
        offset up to which the attempt's output is now stored."""
        path = self.path(job_id, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if self._marker(path, attempt + 1).exists():
                raise LogSuperseded(f"attempt {attempt + 1} has begun; attempt {attempt} is over")
            base = self._base(path, attempt, size)
            stored = size - base
            if offset > stored:
                raise LogGap(stored)
            fresh = data[stored - offset :]
            if fresh:
                os.write(fd, fresh)
            return stored + len(fresh)
        finally:
            os.close(fd)

    @staticmethod
    def _marker(path: Path, attempt: int) -> Path:
        return path.with_name(f"{path.stem}.attempt-{attempt}.base")

    def _base(self, path: Path, attempt: int, size: int) -> int:
        """Where the attempt's output begins in the file; the file's end on its first batch."""
        marker = self._marker(path, attempt)
        try:
            return int(marker.read_text())
        except (FileNotFoundError, ValueError):
            tmp = marker.with_name(marker.name + ".tmp")
            tmp.write_text(str(size))
            os.replace(tmp, marker)
            return size
