"""rainier's scheduling policy: quotas with borrowing and reclaim, DRF fair share, topology-aware
gangs, backfill behind one reservation per flavor.

One pass turns a `ClusterState` into `Decisions`, and the decisions depend on that state alone,
so the live reconciler and the simulator get the same answer for the same state. What the
policy does keep between passes (`_Memo`: the node index, the rows of the running table) is a
cache of what a pass derives from its inputs, used only when those inputs are the same again:
it changes how long a pass takes, never what it decides. Every pending workload
gets exactly one Admit or Wait; preemptions come with the Wait of the gang they make room for.

Phase 1, guarantees. Pending work is taken in order (replicas first, then the tenant's priority
tier, the workload's priority, submission time, id). A workload that fits in what is left of its
tenant's guarantee is placed on free chips; failing that, borrowers of other tenants are
preempted (see `running.py` for who counts as borrowing and `preemption.py` for the minimal
set), and the gang's nodes are held for it: nobody else may use them in this pass, and it is
admitted in a later pass once the stopping allocations are gone. A workload with
`may_preempt_own` may also stop its tenant's lower-priority preemptible work, as long as the
result is inside the guarantee. Everything else is deferred to phase 2.

Phase 2, borrowing. Deferred work borrows idle chips, one workload at a time from the tenant
whose dominant share (weighted DRF, see `quota_book.py`) would be smallest after admitting it,
within its borrow limit. Borrowed work must be preemptible. Nothing is preempted in phase 2.

Starvation. The first workload of a flavor that is blocked by capacity alone (not by quota) gets
the flavor's reservation: the earliest time it could start given the declared ends of running
work, and the nodes it would start on (`reservation.py`). Work considered after it may use those
nodes only if it ends by then, or if it leaves the gang's chips there untouched. The promise holds
against that work only: in a later pass, work ordered ahead of the gang (guaranteed work when the
gang borrows, a higher tier or priority) may still take the nodes, as a higher-priority arrival
may in Slurm. Preemption never plans onto reserved nodes. If the first blocked workload has no
finite estimate, the next few blocked ones are tried.

Cost of a pass, for N nodes, A running allocations with T tasks, P pending workloads and
n_f nodes, b_f blocks of the workload's flavor:

- building: O(N log N) to sort nodes into topology order, only when the node set differs from
  the previous pass's (O(1) for the same tuple, O(N) comparisons for an equal new one); O(A + T)
  to read running work into flat arrays, in Python only for allocations that are not the very
  objects of the previous pass, in numpy for the rest (no Python object per allocation after
  that);
- a 1-node workload: O(log K) for K distinct (node free, block empty nodes) keys, plus the size
  of its block when it breaks into an empty node (see `capacity.py`); a shape that failed is
  remembered, so any later workload of the same or a bigger shape fails in O(1);
- a gang: O(n_f + b_f log b_f) numpy work, no Python loop over nodes;
- a preemption: O((n_f + T_f) log V) for V candidates, once per gang that needs one, and
  remembered when it fails;
- a reservation: O((n_f + T_f) log T_f), a few per flavor at most;
- ordering: O(P log P) to sort, O(P log tenants) for the fair-share heap.

So a pass is O(N log N + A + T + P log P) Python-level work plus vectorised work per gang. On
the benchmark (`benchmarks/scheduler_scale.py`: 500,000 chips, 50,000 running, 10,000 pending)
a pass takes about 0.4 s of CPU and places over 20,000 workloads a second.
"""

from __future__ import annotations

import gc
import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from rainier.scheduler import reasons
from rainier.scheduler.capacity import RESERVED, FlavorCapacity, StaticLayout
from rainier.scheduler.placement import place
from rainier.scheduler.preemption import plan_preemption
from rainier.scheduler.quota_book import QuotaBook, TenantBook
from rainier.scheduler.reservation import Releases, earliest_start
from rainier.scheduler.running import RunningTable, VictimList, still_borrowing, victim_order
from rainier.scheduler.topology import FlavorNodes, IntArray, build_flavors
from rainier.scheduler.types import (
    Admit,
    ClusterState,
    Decisions,
    NodeInfo,
    Preempt,
    Wait,
    WaitCause,
    Workload,
)


def shape_fits(topo: FlavorNodes | None, w: Workload) -> bool:
    """Whether the gang's shape fits these nodes when they are empty: if not, it never will."""
    return (
        topo is not None
        and w.nodes >= 1
        and w.chips_per_node >= 0
        and place(topo, topo.chips, w.nodes, w.chips_per_node, w.within) is not None
    )


@dataclass(frozen=True, slots=True)
class _Layout:
    """The node index of one node set: topology order per flavor and global node ids."""

    nodes: tuple[NodeInfo, ...]
    topos: dict[str, FlavorNodes]
    statics: dict[str, StaticLayout]
    base: dict[str, int]
    ids: dict[str, int]
    total: int
    capacity: dict[str, int]
    # Whether a gang shape fits the flavor's nodes at all, when empty: a property of the node
    # set alone, so it is learnt once per node set rather than once per pass.
    possible_shapes: dict[tuple[object, ...], bool]

    @staticmethod
    def of(nodes: tuple[NodeInfo, ...]) -> _Layout:
        topos = build_flavors(nodes)
        base: dict[str, int] = {}
        ids: dict[str, int] = {}
        total = 0
        for f, topo in topos.items():
            base[f] = total
            ids.update(zip(topo.names, range(total, total + topo.size), strict=True))
            total += topo.size
        statics = {f: StaticLayout.of(t) for f, t in topos.items()}
        capacity = {f: int(t.chips.sum()) for f, t in topos.items()}
        return _Layout(nodes, topos, statics, base, ids, total, capacity, {})


class _Memo:
    """The state a `RainierScheduler` keeps from one pass to the next: a cache of what the last
    pass derived from its inputs, reused only when the next pass's inputs are the same. Sorting
    nodes into topology order costs far more than the rest of a small pass, and the node set
    rarely changes, so the index is kept while the nodes compare equal; the running table
    lends the rows of allocations that are the same objects as last time. Each is replaced
    whole, never edited, so a pass always sees a consistent pair. Reusing it cannot change a
    decision, only its cost; it is not locked, so one scheduler serves one pass at a time (the
    reconciler's loop, or one simulation)."""

    __slots__ = ("layout", "running")

    def __init__(self) -> None:
        self.layout: _Layout | None = None
        self.running: tuple[_Layout, RunningTable] | None = None

    def layout_of(self, nodes: Sequence[NodeInfo]) -> _Layout:
        known = self.layout
        if known is not None and (
            nodes is known.nodes or (len(nodes) == len(known.nodes) and tuple(nodes) == known.nodes)
        ):
            return known
        self.layout = known = _Layout.of(tuple(nodes))
        self.running = None
        return known

    def table_of(self, layout: _Layout, state: ClusterState) -> RunningTable:
        previous = self.running
        base = previous[1] if previous is not None and previous[0] is layout else None
        table = RunningTable.of(state.running, layout.ids, state.now_s, base)
        self.running = (layout, table)
        return table


@dataclass(frozen=True, slots=True)
class RainierScheduler:
    """The policy; its fields are the knobs an operator may turn."""

    replicas_first: bool = True
    reservation_attempts: int = 4
    _memo: _Memo = field(default_factory=_Memo, init=False, repr=False, compare=False, hash=False)

    def schedule(self, state: ClusterState) -> Decisions:
        # A pass allocates hundreds of thousands of short-lived tuples and arrays but no
        # cycles; pausing the cyclic collector keeps it from rescanning the caller's large,
        # long-lived state (tens of thousands of allocations) many times over.
        collector_was_on = gc.isenabled()
        gc.disable()
        try:
            return _Pass(self, state, self._memo).run()
        finally:
            if collector_was_on:
                gc.enable()


class _Pass:
    def __init__(self, policy: RainierScheduler, state: ClusterState, memo: _Memo) -> None:
        self.policy = policy
        self.state = state
        self.now = state.now_s
        self.out = Decisions()
        layout = memo.layout_of(state.nodes)
        self.topos: dict[str, FlavorNodes] = layout.topos
        self.base: dict[str, int] = layout.base
        total = layout.total
        self.quota_book = QuotaBook(state.quotas, layout.capacity)
        self.table = table = memo.table_of(layout, state)
        owner = table.task_owner()
        known = table.node >= 0
        per_task = table.cpn[owner]
        used = np.bincount(table.node[known], weights=per_task[known], minlength=total)
        leaving = known & table.stopping[owner]
        back = np.bincount(table.node[leaving], weights=per_task[leaving], minlength=total)
        self.caps = {
            f: FlavorCapacity(
                t,
                used[self.base[f] : self.base[f] + t.size].astype(np.int64),
                back[self.base[f] : self.base[f] + t.size].astype(np.int64),
                layout.statics[f],
            )
            for f, t in self.topos.items()
        }
        self.live = ~table.stopping
        names, codes = np.unique(table.tenant, return_inverse=True)
        self.tenant_names: list[str] = [str(n) for n in names]
        self.tenant_code: IntArray = codes.astype(np.int64).reshape(-1)
        self.alive = self.live.copy()
        rows = np.flatnonzero(self.live)
        flavor_names, flavor_code = np.unique(table.flavor[rows], return_inverse=True)
        width = max(1, len(flavor_names))
        committed = np.bincount(
            self.tenant_code[rows] * width + flavor_code.reshape(-1),
            weights=table.chips[rows],
            minlength=len(names) * width,
        )
        for k in np.flatnonzero(committed).tolist():
            tenant = self.tenant_names[k // width]
            self.quota_book.book(tenant).add(str(flavor_names[k % width]), int(committed[k]))
        self.admitted: dict[str, list[tuple[list[int], int, float]]] = {f: [] for f in self.topos}
        self.failed: dict[tuple[object, ...], float] = {}
        self.possible_shapes = layout.possible_shapes
        self.borrowers: dict[str, VictimList] = {}
        self.task_owner = owner
        self.own_sorted: dict[tuple[str, str], VictimList] = {}
        self.reservation_tries: dict[str, int] = {}

    def run(self) -> Decisions:
        deferred: list[Workload] = []
        for w in sorted(self.state.pending, key=self._order):
            self._guaranteed(w, deferred)
        self._borrowing(deferred)
        return self.out

    def _order(self, w: Workload) -> tuple[int, int, int, float, str]:
        return (self._kind_rank(w), -self._tier(w.tenant), -w.priority, w.submitted_s, w.id)

    def _kind_rank(self, w: Workload) -> int:
        return 0 if self.policy.replicas_first and w.kind == "replica" else 1

    def _tier(self, tenant: str) -> int:
        return self.quota_book.book(tenant).quota.priority_tier

    def _wait(
        self,
        w: Workload,
        reason: str,
        reservation_s: float | None = None,
        cause: WaitCause = WaitCause.CAPACITY,
    ) -> None:
        self.out.wait.append(Wait(w.id, reason, reservation_s, cause))

    def _guaranteed(self, w: Workload, deferred: list[Workload]) -> None:
        if not self._possible(w):
            self._wait(w, reasons.never_fits(w), cause=WaitCause.NEVER_FITS)
            return
        book = self.quota_book.book(w.tenant)
        f = w.flavor
        over = book.used(f) + w.chips - book.guaranteed(f)
        if over <= 0:
            if self._try_admit(w, book):
                return
            if self._try_preempt(w, book, entitled=True, need_own=0):
                return
            self._blocked(w)
            return
        if (
            w.may_preempt_own
            and self._own(w).chips.sum() >= over
            and self._try_preempt(w, book, entitled=False, need_own=over)
        ):
            return
        deferred.append(w)

    def _borrowing(self, deferred: list[Workload]) -> None:
        queues: dict[str, deque[Workload]] = {}
        for w in deferred:
            queues.setdefault(w.tenant, deque()).append(w)
        heap = [self._heap_key(t, q[0]) for t, q in queues.items()]
        heapq.heapify(heap)
        while heap:
            tenant = heapq.heappop(heap)[-1]
            queue = queues[tenant]
            self._borrow(queue.popleft())
            if queue:
                heapq.heappush(heap, self._heap_key(tenant, queue[0]))

    def _heap_key(self, tenant: str, w: Workload) -> tuple[int, int, float, str]:
        share = self.quota_book.share_after(tenant, w.flavor, w.chips)
        return (self._kind_rank(w), -self._tier(tenant), share, tenant)

    def _borrow(self, w: Workload) -> None:
        book = self.quota_book.book(w.tenant)
        f = w.flavor
        after = book.borrowed(f, w.chips)
        if after > 0 and not w.preemptible:
            reason = reasons.not_preemptible(w, book.used(f), book.guaranteed(f))
            self._wait(w, reason, cause=WaitCause.NOT_PREEMPTIBLE)
            return
        allowed = book.borrow_limit(f)
        if allowed is not None and after > allowed:
            reason = reasons.over_limit(w, book.borrowed(f), allowed)
            self._wait(w, reason, cause=WaitCause.OVER_LIMIT)
            return
        if not self._try_admit(w, book):
            self._blocked(w)

    def _possible(self, w: Workload) -> bool:
        key = (w.flavor, w.nodes, w.chips_per_node, w.within)
        known = self.possible_shapes.get(key)
        if known is None:
            known = shape_fits(self.topos.get(w.flavor), w)
            self.possible_shapes[key] = known
        return known

    def _end(self, w: Workload) -> float:
        return math.inf if w.max_duration_s is None else self.now + w.max_duration_s

    def _try_admit(self, w: Workload, book: TenantBook) -> bool:
        cap = self.caps[w.flavor]
        end = self._end(w)
        short = end <= cap.reservation_s
        if w.nodes == 1:
            key: tuple[object, ...] = (w.flavor, "single", short)
            size = w.chips_per_node
        else:
            key = (w.flavor, w.within, w.chips_per_node, short)
            size = w.nodes
        if self.failed.get(key, math.inf) <= size:
            return False
        nodes: list[int] | None
        if w.nodes == 1:
            single = cap.best_single(w.chips_per_node, end)
            nodes = None if single is None else [single]
        else:
            found = place(cap.topo, cap.offer(end), w.nodes, w.chips_per_node, w.within)
            nodes = None if found is None else found.tolist()
        if nodes is None:
            for cls in (False, True) if short else (False,):
                k = (*key[:-1], cls)
                self.failed[k] = min(self.failed.get(k, math.inf), size)
            return False
        self._admit(w, book, cap, nodes, end)
        return True

    def _admit(
        self, w: Workload, book: TenantBook, cap: FlavorCapacity, nodes: list[int], end: float
    ) -> None:
        f = w.flavor
        backfill = end <= cap.reservation_s and any(cap.status[i] == RESERVED for i in nodes)
        cap.take(nodes, w.chips_per_node, end)
        before = book.borrowed(f)
        book.add(f, w.chips)
        borrowed = book.borrowed(f) - before
        self.admitted[f].append((nodes, w.chips_per_node, end))
        if borrowed > 0:
            reason = reasons.borrows(w, borrowed, book.borrowed(f), book.borrow_limit(f))
        else:
            reason = reasons.in_guarantee(w, book.used(f), book.guaranteed(f))
        if backfill:
            holder = cap.reserved_for or ""
            reason += "; " + reasons.backfilled(w, end, holder, cap.reservation_s)
        names = tuple(cap.topo.names[i] for i in sorted(nodes))
        self.out.admit.append(Admit(w.id, names, borrowed, reason))

    def _victims(self, flavor: str, rows: IntArray, own: bool) -> VictimList:
        size = self.topos[flavor].size
        return VictimList.of(self.table, self.task_owner, self.base[flavor], size, rows, own)

    def _borrower_list(self, flavor: str) -> VictimList:
        found = self.borrowers.get(flavor)
        if found is None:
            rows = victim_order(
                self.table, np.flatnonzero(self.live & (self.table.flavor == flavor))
            )
            found = self.borrowers[flavor] = self._victims(flavor, rows, own=False)
        return found

    def _reclaimable(self, w: Workload) -> VictimList:
        """Other tenants' allocations of the flavor that are borrowing right now."""
        pool = self._borrower_list(w.flavor)
        codes = self.tenant_code[pool.rows]
        mine = self.tenant_names.index(w.tenant) if w.tenant in self.tenant_names else -1
        mask = self.alive[pool.rows] & (codes != mine)
        budget = np.array(
            [
                self.quota_book.book(t).used(w.flavor)
                - self.quota_book.book(t).guaranteed(w.flavor)
                for t in self.tenant_names
            ],
            dtype=np.int64,
        )
        mask[mask] = still_borrowing(codes[mask], pool.chips[mask], budget)
        return pool.keep(mask)

    def _own(self, w: Workload) -> VictimList:
        key = (w.tenant, w.flavor)
        ranked = self.own_sorted.get(key)
        t = self.table
        if ranked is None:
            rows = victim_order(
                t, np.flatnonzero(self.live & (t.tenant == w.tenant) & (t.flavor == w.flavor))
            )
            ranked = self.own_sorted[key] = self._victims(w.flavor, rows, own=True)
        return ranked.keep(self.alive[ranked.rows] & (t.priority[ranked.rows] < w.priority))

    def _try_preempt(self, w: Workload, book: TenantBook, entitled: bool, need_own: int) -> bool:
        cap = self.caps[w.flavor]
        key = (w.flavor, w.within if w.nodes > 1 else None, w.chips_per_node)
        if not w.may_preempt_own and self.failed.get(("reclaim", *key), math.inf) <= w.nodes:
            return False
        cands = self._victims(w.flavor, np.empty(0, dtype=np.int64), own=False)
        if entitled:
            cands = self._reclaimable(w)
        if w.may_preempt_own:
            cands = cands.then(self._own(w))
        plan = plan_preemption(cap.topo, cap.offer_after_preemption(), w, cands, need_own)
        if plan is None:
            if not w.may_preempt_own:
                old = self.failed.get(("reclaim", *key), math.inf)
                self.failed[("reclaim", *key)] = min(old, w.nodes)
            return False
        for row in plan.victims.tolist():
            self._preempt(row, w)
        nodes = plan.nodes.tolist()
        stopping = bool((cap.incoming[plan.nodes] > 0).any())
        cap.hold(nodes)
        book.add(w.flavor, w.chips)
        reason = reasons.preempting(w, len(plan.victims), stopping)
        self._wait(w, reason, cause=WaitCause.PREEMPTING)
        return True

    def _preempt(self, row: int, claimant: Workload) -> None:
        t = self.table
        v = t.allocs[row].workload
        self.alive[row] = False
        lo = self.base[v.flavor]
        cap = self.caps[v.flavor]
        nodes = t.node[t.offsets[row] : t.offsets[row + 1]]
        nodes = nodes[(nodes >= lo) & (nodes < lo + cap.topo.size)] - lo
        cap.incoming[nodes] += v.chips_per_node
        t.end_s[row] = min(float(t.end_s[row]), self.now + v.grace_period_s)
        self.quota_book.book(v.tenant).add(v.flavor, -int(t.chips[row]))
        if v.tenant == claimant.tenant:
            reason = reasons.displaced(v, claimant)
        else:
            reason = reasons.reclaim(v, claimant)
        self.out.preempt.append(Preempt(v.id, v.grace_period_s, reason))

    def _blocked(self, w: Workload) -> None:
        f = w.flavor
        cap = self.caps[f]
        tries = self.reservation_tries.get(f, 0)
        if cap.reserved_for is None and tries < self.policy.reservation_attempts:
            self.reservation_tries[f] = tries + 1
            res = earliest_start(cap.topo, cap.free, cap.held, self._releases(f), self.now, w)
            if res is not None:
                cap.reserve(res.nodes.tolist(), res.offer - w.chips_per_node, res.start_s, w.id)
                reason = reasons.reserved(w, res.start_s)
                self._wait(w, reason, res.start_s, WaitCause.RESERVED)
                return
            self._wait(w, reasons.no_estimate(w))
            return
        self._wait(w, reasons.behind(w, cap.reserved_for, cap.reservation_s))

    def _releases(self, flavor: str) -> Releases:
        t = self.table
        lo = self.base[flavor]
        mine = (t.node >= lo) & (t.node < lo + self.topos[flavor].size)
        owner = self.task_owner[mine]
        admitted = self.admitted[flavor]
        sizes = [len(n) for n, _, _ in admitted]
        return Releases(
            np.concatenate(
                [
                    t.node[mine] - lo,
                    np.fromiter(chain.from_iterable(n for n, _, _ in admitted), np.int64),
                ]
            ),
            np.concatenate(
                [t.cpn[owner], np.repeat(np.array([c for _, c, _ in admitted], np.int64), sizes)]
            ),
            np.concatenate(
                [
                    t.end_s[owner],
                    np.repeat(np.array([e for _, _, e in admitted], np.float64), sizes),
                ]
            ),
        )
