"""What probing a replica needs and finds: the replica to ask, its answer, its failures in a row.

The serving runtime binds a port of the OS's choosing and registers it with the control plane
over HTTP with its job token (`rainier.control.task_endpoints`); the controller asks `/health`
at the address the current attempt registered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
class ReplicaHealth:
    """How many probes of a replica's attempt failed in a row."""

    attempt: int
    failures: int = 0
