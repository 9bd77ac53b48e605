"""Addresses tasks register over HTTP with their job token, and the control plane hands out.

Machines share nothing but the network, so the control plane learns where a task listens from
the task itself: a replica registers its serving port (`serve`) once it listens, and rank 0 of
a gang registers the port it bound on its own node for the gang to meet at (`rendezvous`),
which the other ranks read before they start. Each registration belongs to the job's current
attempt: a restarted attempt never finds the previous one's ports.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import select

from rainier.store.db import Store
from rainier.store.tables import TERMINAL_STATES, Job, Node, Task, TaskEndpoint, utcnow


class Purpose(enum.StrEnum):
    SERVE = "serve"
    RENDEZVOUS = "rendezvous"


@dataclass(frozen=True)
class Registered:
    job_id: str
    attempt: int
    rank: int
    purpose: Purpose
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class NotRegistrable(Exception):
    """The job cannot register (it ended, or has no such rank): said to the caller as 409."""


class ForeignHost(ValueError):
    """A host that is neither the rank's node nor where the registration came from."""


def register(
    store: Store,
    job_id: str,
    purpose: Purpose,
    rank: int,
    host: str | None,
    port: int,
    *,
    peer: str | None,
) -> Registered:
    """Records (or replaces) where `rank` of the job's current attempt answers for `purpose`.

    The host is the address of the node the rank was placed on, or the address the
    registration came from (`peer`, the default): a task cannot send the gateway's requests,
    or its gang, anywhere else."""
    with store.write() as s:
        job = s.get(Job, job_id)
        if job is None or job.state in TERMINAL_STATES:
            raise NotRegistrable(f"job {job_id} has ended")
        if rank >= job.nodes:
            raise NotRegistrable(f"rank must be < {job.nodes}")
        node = s.scalars(
            select(Node.address)
            .join(Task, Task.node == Node.name)
            .where(Task.job_id == job_id, Task.attempt == job.attempt, Task.rank == rank)
        ).first()
        allowed = [a for a in (node, peer) if a]
        host = host or peer
        if not host or host not in allowed:
            raise ForeignHost(
                f"host must be the address of rank {rank}'s node or this request's "
                f"({' or '.join(allowed) or 'neither is known'}), not {host!r}"
            )
        row = s.get(TaskEndpoint, (job_id, job.attempt, rank, purpose.value))
        if row is None:
            row = TaskEndpoint(job_id=job_id, attempt=job.attempt, rank=rank, purpose=purpose.value)
            s.add(row)
        row.host, row.port, row.registered_at = host, port, utcnow()
        return Registered(job_id, job.attempt, rank, purpose, host, port)


def lookup(
    store: Store, job_id: str, purpose: Purpose, rank: int = 0, attempt: int | None = None
) -> Registered | None:
    """What `rank` registered for `purpose` in `attempt` (the job's current one by default)."""
    with store.read() as s:
        if attempt is None:
            job = s.get(Job, job_id)
            if job is None:
                return None
            attempt = job.attempt
        row = s.scalars(
            select(TaskEndpoint).where(
                TaskEndpoint.job_id == job_id,
                TaskEndpoint.attempt == attempt,
                TaskEndpoint.rank == rank,
                TaskEndpoint.purpose == purpose.value,
            )
        ).one_or_none()
        if row is None:
            return None
        return Registered(row.job_id, row.attempt, row.rank, purpose, row.host, row.port)


def serving_url(store: Store, job_id: str, attempt: int) -> str | None:
    """Where a replica's `attempt` said it serves, or None until it has said so."""
    found = lookup(store, job_id, Purpose.SERVE, 0, attempt)
    return found.url if found is not None else None
