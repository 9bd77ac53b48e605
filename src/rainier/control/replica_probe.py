"""Finding and probing replicas: where each announced it listens, and whether it answers.

The serving runtime binds a port of the OS's choosing and announces it with a JSON line
`{"event": "listening", "port": N}` on stdout, which the executor captures in the job's log
file; the controller reads that announcement from the log, then asks `/health` there."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path


def announced_port(log_path: Path, offset: int) -> tuple[int | None, int]:
    """The port of the newest `{"event": "listening"}` line after `offset`, and the offset up
    to which whole lines were read (a half-written last line is read again next time)."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return None, offset
    end = data.rfind(b"\n") + 1
    port = None
    for line in data[:end].splitlines():
        text = line.strip()
        if not text.startswith(b"{") or b"listening" not in text:
            continue
        try:
            event = json.loads(text)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "listening":
            with contextlib.suppress(TypeError, ValueError):
                port = int(event["port"])
    return port, offset + end


@dataclass(frozen=True)
class ProbeTarget:
    job_id: str
    deployment_id: str
    attempt: int
    log_path: Path
    address: str


@dataclass(frozen=True)
class ProbeResult:
    job_id: str
    deployment_id: str
    attempt: int
    url: str
    healthy: bool
    running: int = 0
    waiting: int = 0


@dataclass
class ReplicaLog:
    """What the leader learnt from one replica's log: read up to `offset`, found `port`."""

    attempt: int
    offset: int = 0
    port: int | None = None
    failures: int = 0
