"""Baseline policies to hold rainier's policy against, behind the same `Scheduler` interface.

Each flavor is its own pool with its own queue: an h200 job never waits behind a trn2 job.
Gangs go on distinct nodes, best fit (the nodes with the fewest free chips that still fit), which
keeps whole nodes free for wide gangs. None of them preempts.

* `FifoScheduler`: strict first come, first served per flavor (priority first, then submission);
  when the head does not fit, nothing behind it starts.
* `BackfillScheduler`: FIFO plus Slurm's backfill rule. The head that does not fit gets a
  reservation: the earliest time at which, if every running gang ends at its `max_duration_s`,
  enough nodes are free. A later job may start now only if it fits now and ends, per its own
  `max_duration_s`, no later than that reservation, so it can never delay the head. Jobs without
  a time limit are never backfilled (nothing can be promised about them).
* `SjfOracle`: shortest true duration first, starting whatever fits. It reads the trace's real
  run times, which no live scheduler knows, so its mean JCT is a lower bound to aim at.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from operator import attrgetter

from rainier.scheduler.types import Admit, ClusterState, Decisions, Wait, Workload

_BY_SUBMISSION = attrgetter("submitted_s", "id")
_BY_PRIORITY = attrgetter("priority")


def in_order(pending: Iterable[Workload]) -> list[Workload]:
    """Highest priority first, then first submitted (two stable C-level sorts, no key tuples)."""
    return sorted(sorted(pending, key=_BY_SUBMISSION), key=_BY_PRIORITY, reverse=True)


class FreeChips:
    """Free chips per node, bucketed by amount per flavor so best-fit placement is cheap."""

    def __init__(self, state: ClusterState) -> None:
        free = {n.name: n.chips for n in state.nodes if n.schedulable}
        for alloc in state.running:
            cpn = alloc.workload.chips_per_node
            for name in alloc.node_names:
                if name in free:
                    free[name] -= cpn
        self.buckets: dict[str, dict[int, list[str]]] = {}
        for n in state.nodes:
            amount = free.get(n.name, 0)
            if amount > 0:
                self.buckets.setdefault(n.flavor, {}).setdefault(amount, []).append(n.name)

    def take(self, flavor: str, nodes: int, chips_per_node: int) -> tuple[str, ...] | None:
        buckets = self.buckets.get(flavor)
        if not buckets:
            return None
        if nodes == 1:
            fit = [a for a, names in buckets.items() if a >= chips_per_node and names]
            if not fit:
                return None
            a = min(fit)
            name = buckets[a].pop()
            if a > chips_per_node:
                buckets.setdefault(a - chips_per_node, []).append(name)
            return (name,)
        amounts = sorted(a for a, names in buckets.items() if a >= chips_per_node and names)
        if sum(len(buckets[a]) for a in amounts) < nodes:
            return None
        chosen: list[str] = []
        for a in amounts:
            names = buckets[a]
            rest = a - chips_per_node
            while names and len(chosen) < nodes:
                name = names.pop()
                chosen.append(name)
                if rest > 0:
                    buckets.setdefault(rest, []).append(name)
            if len(chosen) == nodes:
                break
        return tuple(chosen)

    def amounts(self, flavor: str) -> dict[str, int]:
        return {
            name: amount for amount, names in self.buckets.get(flavor, {}).items() for name in names
        }


class FifoScheduler:
    def schedule(self, state: ClusterState) -> Decisions:
        free = FreeChips(state)
        out = Decisions()
        if not free.buckets:
            return out
        blocked: set[str] = set()
        for w in in_order(state.pending):
            if w.flavor in blocked:
                continue
            nodes = free.take(w.flavor, w.nodes, w.chips_per_node)
            if nodes is None:
                blocked.add(w.flavor)
                continue
            out.admit.append(Admit(w.id, nodes, 0, "first in line"))
        return out


class BackfillScheduler:
    def schedule(self, state: ClusterState) -> Decisions:
        free = FreeChips(state)
        out = Decisions()
        started: list[tuple[Workload, tuple[str, ...]]] = []
        shadow: dict[str, float] = {}
        now = state.now_s
        for w in in_order(state.pending):
            reservation = shadow.get(w.flavor)
            if reservation is not None:
                limit = w.max_duration_s
                if limit is None or now + limit > reservation:
                    continue
            nodes = free.take(w.flavor, w.nodes, w.chips_per_node)
            if nodes is not None:
                started.append((w, nodes))
                reason = "first in line" if reservation is None else "backfill"
                out.admit.append(Admit(w.id, nodes, 0, reason))
                continue
            if reservation is None:
                shadow[w.flavor] = at = _reservation(state, free, started, w)
                out.wait.append(Wait(w.id, "head of queue", at if math.isfinite(at) else None))
        return out


def _reservation(
    state: ClusterState,
    free: FreeChips,
    started: list[tuple[Workload, tuple[str, ...]]],
    head: Workload,
) -> float:
    """When the head fits if every gang of its flavor ends at its time limit."""
    amounts = free.amounts(head.flavor)
    cpn = head.chips_per_node
    ends: list[tuple[float, tuple[str, ...], int]] = []
    for alloc in state.running:
        w = alloc.workload
        if w.flavor == head.flavor:
            limit = w.max_duration_s
            end = math.inf if limit is None else alloc.started_s + limit
            ends.append((end, alloc.node_names, w.chips_per_node))
    for w, names in started:
        limit = w.max_duration_s
        ends.append((math.inf if limit is None else state.now_s + limit, names, w.chips_per_node))
    ends.sort(key=lambda e: e[0])
    fitting = sum(1 for a in amounts.values() if a >= cpn)
    for end, names, chips in ends:
        if end == math.inf:
            break
        for name in names:
            before = amounts.get(name, 0)
            amounts[name] = before + chips
            if before < cpn <= before + chips:
                fitting += 1
        if fitting >= head.nodes:
            return end
    return math.inf


class SjfOracle:
    def __init__(self, durations: Mapping[str, float]) -> None:
        self.durations = durations

    def schedule(self, state: ClusterState) -> Decisions:
        free = FreeChips(state)
        out = Decisions()
        durations = self.durations
        order = sorted(
            state.pending, key=lambda w: (durations.get(w.id, math.inf), w.submitted_s, w.id)
        )
        for w in order:
            if not free.buckets.get(w.flavor):
                continue
            nodes = free.take(w.flavor, w.nodes, w.chips_per_node)
            if nodes is not None:
                out.admit.append(Admit(w.id, nodes, 0, "shortest first"))
        return out
