"""Policy names the CLI accepts, and how much of the queue each one is shown."""

from __future__ import annotations

from dataclasses import dataclass

from rainier.scheduler import default_scheduler
from rainier.scheduler.types import Scheduler
from rainier.sim.baselines import BackfillScheduler, FifoScheduler, SjfOracle
from rainier.sim.errors import SimInputError
from rainier.sim.model import Trace

POLICIES = ("rainier", "fifo", "backfill", "sjf")


@dataclass(frozen=True, slots=True)
class Policy:
    """A scheduler and what the engine may assume about it (see `rainier.sim.engine`)."""

    name: str
    scheduler: Scheduler
    queue_window: int | None
    preempts: bool


def make_policy(name: str, trace: Trace, queue_window: int | None = None) -> Policy:
    """How much of each queue a policy is shown, unless `queue_window` says otherwise.

    rainier's policy and backfill see 256 jobs per (tenant, flavor) queue. Strict FIFO only ever
    starts a prefix of each flavor's queue, so 16 per queue loses nothing (the engine calls again
    when it admitted everything it saw). The SJF oracle sees the whole queue: a cut queue would
    not be shortest-first.
    """
    if name == "rainier":
        return Policy(name, default_scheduler(), queue_window or 256, True)
    if name == "fifo":
        return Policy(name, FifoScheduler(), queue_window or 16, False)
    if name == "backfill":
        return Policy(name, BackfillScheduler(), queue_window or 256, False)
    if name == "sjf":
        return Policy(name, SjfOracle({j.id: j.duration_s for j in trace.jobs}), None, False)
    raise SimInputError(f"--policy: unknown policy {name!r}; known: {', '.join(POLICIES)}")
