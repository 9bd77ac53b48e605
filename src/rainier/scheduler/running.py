"""Running allocations as the pass sees them, and which of them are borrowed.

Allocations carry no record of whether they were admitted inside the guarantee, and need none:
a tenant's allocations of one flavor are ranked most-protected first (not preemptible first,
then highest priority, earliest started, id) and the guarantee covers them in that order. An
allocation is *borrowing* if the chips counted up to and including it exceed the guarantee; it
may straddle the line, in which case part of it is borrowed and it is still borrowing. Only
borrowing, preemptible allocations may be preempted to reclaim another tenant's guarantee, in the
reverse order: lowest priority, then latest started first.

Tens of thousands of allocations arrive every pass, so they are read once into flat arrays
(`RunningTable`, one row per allocation and one entry per task) and everything after that is
numpy; Python objects are made only for the few allocations a preemption looks at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import numpy.typing as npt

from rainier.scheduler.topology import IntArray
from rainier.scheduler.types import Allocation

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
StrArray = npt.NDArray[np.str_]


@dataclass(frozen=True, slots=True)
class RunningTable:
    """`node` holds global node ids (see `NodeIds`), -1 for nodes that are not schedulable."""

    allocs: Sequence[Allocation]
    offsets: IntArray
    node: IntArray
    cpn: IntArray
    chips: IntArray
    end_s: FloatArray
    stopping: BoolArray
    tenant: StrArray
    flavor: StrArray
    ids: StrArray
    started_s: FloatArray
    priority: IntArray
    preemptible: BoolArray

    @staticmethod
    def of(allocs: Sequence[Allocation], ids: Mapping[str, int], now_s: float) -> RunningTable:
        n = len(allocs)
        ws = [a.workload for a in allocs]
        inf = math.inf
        numbers = np.array(
            [
                (
                    len(a.node_names),
                    w.chips_per_node,
                    a.stopping,
                    a.started_s,
                    inf if w.max_duration_s is None else w.max_duration_s,
                    w.grace_period_s,
                    w.priority,
                    w.preemptible,
                )
                for a, w in zip(allocs, ws, strict=True)
            ],
            dtype=np.float64,
        ).reshape(n, 8)
        sizes = numbers[:, 0].astype(np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        get = ids.get
        node = np.fromiter(
            (get(name, -1) for name in chain.from_iterable(a.node_names for a in allocs)),
            np.int64,
            int(offsets[-1]),
        )
        cpn = numbers[:, 1].astype(np.int64)
        stopping = numbers[:, 2] > 0
        end = numbers[:, 3] + numbers[:, 4]
        end = np.where(stopping, np.minimum(end, now_s + numbers[:, 5]), end)
        return RunningTable(
            allocs=allocs,
            offsets=offsets,
            node=node,
            cpn=cpn,
            chips=cpn * sizes,
            end_s=end,
            stopping=stopping,
            tenant=np.array([w.tenant for w in ws] or [""], dtype=np.str_)[:n],
            flavor=np.array([w.flavor for w in ws] or [""], dtype=np.str_)[:n],
            ids=np.array([w.id for w in ws] or [""], dtype=np.str_)[:n],
            started_s=numbers[:, 3].copy(),
            priority=numbers[:, 6].astype(np.int64),
            preemptible=numbers[:, 7] > 0,
        )

    def task_owner(self) -> IntArray:
        return np.repeat(np.arange(len(self.allocs), dtype=np.int64), np.diff(self.offsets))


def borrowing_victims(
    table: RunningTable, rows: IntArray, guaranteed: Mapping[str, int]
) -> IntArray:
    """Of `rows` (one flavor, none stopping), the borrowing preemptible ones in victim order.

    One lexsort ranks every tenant's allocations at once, a cumulative sum per tenant finds
    where each guarantee runs out, one more lexsort gives the victim order.
    """
    if len(rows) == 0:
        return rows
    tenant = table.tenant[rows]
    ids = table.ids[rows]
    prio = table.priority[rows]
    pre = table.preemptible[rows]
    started = table.started_s[rows]
    order = np.lexsort((ids, started, -prio, pre, tenant))
    t_sorted = tenant[order]
    starts = np.r_[True, t_sorted[1:] != t_sorted[:-1]]
    first = np.flatnonzero(starts)
    group = np.cumsum(starts) - 1
    cum = np.cumsum(table.chips[rows][order])
    before = np.r_[0, cum][first]
    limit = np.array([guaranteed.get(str(t), 0) for t in t_sorted[first]], dtype=np.int64)
    over = (cum - before[group]) > limit[group]
    chosen = order[over & pre[order]]
    chosen = chosen[np.lexsort((ids[chosen], -started[chosen], prio[chosen]))]
    return rows[chosen]


@dataclass(frozen=True, slots=True)
class VictimList:
    """Candidates (rows of the running table) in preemption order, flattened to one
    (node, chips) entry per task on the flavor's nodes.

    Built once per flavor and pass; each preemption attempt narrows it with numpy masks
    (`keep`) instead of rebuilding it, so an attempt costs O(e) vectorised work.
    """

    rows: IntArray
    own: BoolArray
    chips: IntArray
    cpn: IntArray
    entry_owner: IntArray
    entry_node: IntArray
    entry_chips: IntArray

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def of(
        table: RunningTable, task_owner: IntArray, lo: int, size: int, rows: IntArray, own: bool
    ) -> VictimList:
        """`rows` in preemption order; entries are their tasks on nodes [lo, lo + size)."""
        rank = np.full(len(table.allocs), -1, dtype=np.int64)
        rank[rows] = np.arange(len(rows), dtype=np.int64)
        tasks = np.flatnonzero(
            (rank[task_owner] >= 0) & (table.node >= lo) & (table.node < lo + size)
        )
        tasks = tasks[np.argsort(rank[task_owner[tasks]], kind="stable")]
        owner = rank[task_owner[tasks]]
        return VictimList(
            rows=rows,
            own=np.full(len(rows), own, dtype=bool),
            chips=table.chips[rows],
            cpn=table.cpn[rows],
            entry_owner=owner,
            entry_node=table.node[tasks] - lo,
            entry_chips=table.cpn[rows][owner],
        )

    def keep(self, mask: BoolArray) -> VictimList:
        rank = np.cumsum(mask) - 1
        entries = mask[self.entry_owner]
        return VictimList(
            rows=self.rows[mask],
            own=self.own[mask],
            chips=self.chips[mask],
            cpn=self.cpn[mask],
            entry_owner=rank[self.entry_owner[entries]],
            entry_node=self.entry_node[entries],
            entry_chips=self.entry_chips[entries],
        )

    def then(self, other: VictimList) -> VictimList:
        return VictimList(
            rows=np.concatenate([self.rows, other.rows]),
            own=np.concatenate([self.own, other.own]),
            chips=np.concatenate([self.chips, other.chips]),
            cpn=np.concatenate([self.cpn, other.cpn]),
            entry_owner=np.concatenate([self.entry_owner, other.entry_owner + len(self)]),
            entry_node=np.concatenate([self.entry_node, other.entry_node]),
            entry_chips=np.concatenate([self.entry_chips, other.entry_chips]),
        )
