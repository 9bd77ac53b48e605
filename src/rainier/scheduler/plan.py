"""What the scheduler would do with one more workload, asked before it is submitted.

A plan is the very pass the reconciler runs, on the current state with the candidate added
last in its priority class: the answer is the policy's, not a second opinion. Nothing here
keeps state or does I/O; the caller builds the `ClusterState`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from rainier.scheduler.policy import RainierScheduler, shape_fits
from rainier.scheduler.topology import build_flavors
from rainier.scheduler.types import ClusterState, NodeInfo, Scheduler, WaitCause, Workload


class Outcome(StrEnum):
    RUNS_NOW = "runs-now"
    RESERVED = "reserved"
    PREEMPTING = "preempting"
    WAITS = "waits"
    OVER_LIMIT = "over-borrow-limit"
    NOT_PREEMPTIBLE = "not-preemptible"
    NEVER_FITS = "never-fits"


_OF_CAUSE = {
    WaitCause.CAPACITY: Outcome.WAITS,
    WaitCause.RESERVED: Outcome.RESERVED,
    WaitCause.PREEMPTING: Outcome.PREEMPTING,
    WaitCause.OVER_LIMIT: Outcome.OVER_LIMIT,
    WaitCause.NOT_PREEMPTIBLE: Outcome.NOT_PREEMPTIBLE,
    WaitCause.NEVER_FITS: Outcome.NEVER_FITS,
}


@dataclass(frozen=True)
class Plan:
    """The decision for the candidate, and how its chips split between guarantee and borrowing.

    `borrowed_chips` are the ones preemptible when their owners reclaim them; for a workload
    that would wait, the split is what it would be were it admitted in the state given."""

    outcome: Outcome
    reason: str
    node_names: tuple[str, ...]
    guaranteed_chips: int
    borrowed_chips: int
    reservation_s: float | None = None
    preempts: tuple[str, ...] = ()


def can_ever_fit(nodes: Sequence[NodeInfo], w: Workload) -> bool:
    """Whether the gang fits the flavor's schedulable nodes at all, all of them empty."""
    return shape_fits(build_flavors(n for n in nodes if n.flavor == w.flavor).get(w.flavor), w)


def split(state: ClusterState, w: Workload) -> tuple[int, int]:
    """(guaranteed, borrowed) chips of `w` were it to start now, from its tenant's quota."""
    quota = next((q for q in state.quotas if q.tenant == w.tenant), None)
    guaranteed = quota.guaranteed_chips.get(w.flavor, 0) if quota is not None else 0
    used = sum(
        a.workload.chips
        for a in state.running
        if not a.stopping and a.workload.tenant == w.tenant and a.workload.flavor == w.flavor
    )
    inside = max(0, min(w.chips, guaranteed - used))
    return inside, w.chips - inside


def plan(state: ClusterState, w: Workload, scheduler: Scheduler | None = None) -> Plan:
    """The scheduler's answer for `w` in `state` (which must not already hold it)."""
    candidate = replace(w, submitted_s=max(w.submitted_s, state.now_s))
    trial = replace(state, pending=[*state.pending, candidate])
    decisions = (scheduler or RainierScheduler()).schedule(trial)
    inside, borrowed = split(state, w)
    for admit in decisions.admit:
        if admit.workload_id == w.id:
            chips = admit.borrowed_chips
            return Plan(Outcome.RUNS_NOW, admit.reason, admit.node_names, w.chips - chips, chips)
    for wait in decisions.wait:
        if wait.workload_id == w.id:
            preempts = tuple(p.workload_id for p in decisions.preempt)
            return Plan(
                _OF_CAUSE[wait.cause],
                wait.reason,
                (),
                inside,
                borrowed,
                wait.reservation_s,
                preempts if wait.cause is WaitCause.PREEMPTING else (),
            )
    raise AssertionError(f"the scheduler gave no decision for {w.id}")
