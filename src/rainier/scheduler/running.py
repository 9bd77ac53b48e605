"""Running allocations as the pass sees them, and which of them are borrowed.

Allocations carry no record of whether they were admitted inside the guarantee, and need none:
a tenant's preemptible allocations of one flavor are ranked for preemption (lowest priority,
then latest started, then id), and the guarantee covers them from the other end. An allocation
is *borrowing* while its tenant, counting the chips of the candidates ranked ahead of it as
already gone, still holds more than its guarantee; it may straddle the line, in which case part
of it is borrowed and it is still borrowing. Only borrowing allocations are preempted to reclaim
another tenant's guarantee, so reclaim never pushes a tenant below its guarantee by more than
the one allocation that straddles it.

Tens of thousands of allocations arrive every pass, so they are read once into flat arrays
(`RunningTable`, one row per allocation and one entry per task) and everything after that is
numpy; Python objects are made only for the few allocations a preemption looks at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

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
    started_s: FloatArray
    priority: IntArray
    preemptible: BoolArray

    numbers: FloatArray
    row_of: Mapping[int, int]

    @staticmethod
    def of(
        allocs: Sequence[Allocation],
        ids: Mapping[str, int],
        now_s: float,
        previous: RunningTable | None = None,
    ) -> RunningTable:
        """`previous`, a table built with the same `ids`, lends the rows of allocations that are
        the very same objects: a caller that keeps its `Allocation`s between passes (the
        simulator does) pays Python-level work only for what changed.
        Rows are looked up by object identity, which is sound because `previous` holds every
        allocation it indexes, so none of their ids can have been reused."""
        # The table keeps its own immutable copy (free when the caller passed a tuple): were it
        # to share a list the caller later edits, an allocation dropped from it could be freed
        # and its id reused by a new one, which the next pass would mistake for the old row.
        allocs = tuple(allocs)
        n = len(allocs)
        if previous is None or not len(previous.allocs):
            numbers, offsets, node, tenant, flavor = _read(allocs, ids)
        else:
            get_row = previous.row_of.get
            old = np.fromiter(map(get_row, map(id, allocs), repeat(-1)), np.int64, n)
            fresh = np.flatnonzero(old < 0)
            added = [allocs[i] for i in fresh.tolist()]
            f_numbers, f_offsets, f_node, f_tenant, f_flavor = _read(added, ids)
            src = old.copy()
            src[fresh] = len(previous.allocs) + np.arange(len(fresh), dtype=np.int64)
            numbers = np.concatenate([previous.numbers, f_numbers])[src]
            tenant = np.concatenate([previous.tenant, f_tenant])[src]
            flavor = np.concatenate([previous.flavor, f_flavor])[src]
            starts = np.concatenate([previous.offsets[:-1], len(previous.node) + f_offsets[:-1]])
            sizes = numbers[:, 0].astype(np.int64)
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(sizes, out=offsets[1:])
            gather = np.repeat(starts[src] - offsets[:-1], sizes) + np.arange(
                int(offsets[-1]), dtype=np.int64
            )
            node = np.concatenate([previous.node, f_node])[gather]
        sizes = numbers[:, 0].astype(np.int64)
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
            tenant=tenant,
            flavor=flavor,
            started_s=numbers[:, 3].copy(),
            priority=numbers[:, 6].astype(np.int64),
            preemptible=numbers[:, 7] > 0,
            numbers=numbers,
            row_of=dict(zip(map(id, allocs), range(n), strict=True)),
        )

    def task_owner(self) -> IntArray:
        return np.repeat(np.arange(len(self.allocs), dtype=np.int64), np.diff(self.offsets))


def _read(
    allocs: Sequence[Allocation], ids: Mapping[str, int]
) -> tuple[FloatArray, IntArray, IntArray, StrArray, StrArray]:
    """One row of numbers per allocation, its tasks' node ids, and its tenant and flavor."""
    n = len(allocs)
    ws = [a.workload for a in allocs]
    inf = math.inf
    numbers = np.fromiter(
        chain.from_iterable(
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
        ),
        np.float64,
        n * 8,
    ).reshape(n, 8)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(numbers[:, 0].astype(np.int64), out=offsets[1:])
    get = ids.get
    node = np.fromiter(
        (get(name, -1) for name in chain.from_iterable(a.node_names for a in allocs)),
        np.int64,
        int(offsets[-1]),
    )
    tenant = np.array([w.tenant for w in ws] or [""], dtype=np.str_)[:n]
    flavor = np.array([w.flavor for w in ws] or [""], dtype=np.str_)[:n]
    return numbers, offsets, node, tenant, flavor


def victim_order(table: RunningTable, rows: IntArray) -> IntArray:
    """The preemptible ones of `rows`, lowest priority first, then latest started, then id."""
    rows = rows[table.preemptible[rows]]
    ids = np.array([table.allocs[r].workload.id for r in rows.tolist()] or [""], np.str_)
    return rows[np.lexsort((ids[: len(rows)], -table.started_s[rows], table.priority[rows]))]


def still_borrowing(tenant: IntArray, chips: IntArray, budget: IntArray) -> BoolArray:
    """Which candidates (in preemption order) find their tenant still over its guarantee.

    `tenant` codes index `budget`: chips the tenant holds beyond its guarantee right now. A
    candidate qualifies while the chips of its tenant's candidates ahead of it are below the
    budget, i.e. it is at least partly borrowed. Any subset of qualifying candidates still
    qualifies, so trimming a preemption plan never makes it take guaranteed work.
    """
    if len(tenant) == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(tenant, kind="stable")
    t = tenant[order]
    c = chips[order]
    cum = np.cumsum(c)
    starts = np.r_[True, t[1:] != t[:-1]]
    group_base = np.r_[0, cum][np.flatnonzero(starts)][np.cumsum(starts) - 1]
    ok = np.empty(len(order), dtype=bool)
    ok[order] = (cum - c - group_base) < budget[t]
    return ok


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
