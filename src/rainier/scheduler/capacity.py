"""Free chips of one flavor during a pass, and the index that makes 1-node placement cheap.

Most workloads are one node (Philly's median job is one GPU), so the hot path must not touch
every node. Nodes that anyone may use are kept in buckets keyed by (free chips on the node,
empty nodes in its block): the best-fit node for a c-chip task is the first node of the smallest
key >= (c, 0), found with one bisection. The second key prefers blocks that are already broken
into, which keeps empty blocks whole for gangs. Taking chips moves the node to another bucket,
and only when a node stops (or starts) being empty do its block-mates move: O(log keys) per
placement, O(nodes per block) when a block loses an empty node.

Two kinds of node leave the buckets:

- held: promised to a gang that preempted for it; nobody else may use them in this pass.
- reserved: the nodes the starving gang will start on at `reservation_s`. A workload may use
  them if it ends by then (Slurm's backfill rule), or if it leaves the gang the chips it needs
  there (`spare`: chips free at `reservation_s` beyond the gang's share).

`free` counts chips now: running allocations, stopping ones included, are subtracted until they
are gone. `incoming` counts the chips of allocations that are stopping (or were preempted in
this pass) and will come back; only preemption planning looks at it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from rainier.scheduler.topology import FlavorNodes, IntArray

BUCKETED, HELD, RESERVED = 0, 1, 2
_LOWEST = -(1 << 62)


@dataclass(frozen=True, slots=True)
class StaticLayout:
    """The parts of a flavor's layout that every pass reads as Python lists; built once per
    node set (they never change while it does) and only read."""

    block_of: list[int]
    chips: list[int]
    members: list[range]

    @staticmethod
    def of(topo: FlavorNodes) -> StaticLayout:
        return StaticLayout(
            topo.block_of.tolist(),
            topo.chips.tolist(),
            [range(*topo.block_range(b)) for b in range(topo.block_count)],
        )


class FlavorCapacity:
    def __init__(
        self,
        topo: FlavorNodes,
        used: IntArray,
        incoming: IntArray,
        static: StaticLayout | None = None,
    ) -> None:
        static = static or StaticLayout.of(topo)
        self.topo = topo
        self.free: IntArray = topo.chips - used
        self.incoming: IntArray = incoming
        self.free_list: list[int] = self.free.tolist()
        self.block_of: list[int] = static.block_of
        self.chips: list[int] = static.chips
        self.block_empty: list[int] = (
            np.bincount(topo.block_of, weights=self.free == topo.chips, minlength=topo.block_count)
            .astype(np.int64)
            .tolist()
        )
        self.members: list[range] = static.members
        self.status: list[int] = [BUCKETED] * topo.size
        self.held: list[int] = []
        self.reserved: IntArray = np.empty(0, dtype=np.int64)
        self.spare: IntArray = np.zeros(topo.size, dtype=np.int64)
        self.reservation_s: float = math.inf
        self.reserved_for: str | None = None
        self._buckets: dict[tuple[int, int], dict[int, None]] = {}
        self._keys: list[tuple[int, int]] = []
        self._fill()

    def _fill(self) -> None:
        """Bucket every node at once: one lexsort instead of a bisection per node."""
        empty = np.array(self.block_empty, dtype=np.int64)[self.topo.block_of]
        nodes = np.flatnonzero(self.free >= 0)
        nodes = nodes[np.lexsort((nodes, empty[nodes], self.free[nodes]))]
        first, second = self.free[nodes], empty[nodes]
        cut = np.flatnonzero((first[1:] != first[:-1]) | (second[1:] != second[:-1])) + 1
        for group in np.split(nodes, cut) if len(nodes) else []:
            key = (int(self.free[group[0]]), int(empty[group[0]]))
            self._buckets[key] = dict.fromkeys(group.tolist())
            self._keys.append(key)

    def _key(self, i: int) -> tuple[int, int]:
        return (self.free_list[i], self.block_empty[self.block_of[i]])

    def _add(self, i: int) -> None:
        if self.free_list[i] < 0:
            return
        key = self._key(i)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            bisect.insort(self._keys, key)
        bucket[i] = None

    def _remove(self, i: int) -> None:
        if self.free_list[i] < 0:
            return
        key = self._key(i)
        bucket = self._buckets[key]
        del bucket[i]
        if not bucket:
            del self._buckets[key]
            del self._keys[bisect.bisect_left(self._keys, key)]

    def best_single(self, chips: int, end_s: float) -> int | None:
        """The best-fit node for one task of `chips` that runs until `end_s`, or None."""
        pos = bisect.bisect_left(self._keys, (chips, _LOWEST))
        if pos < len(self._keys):
            return next(iter(self._buckets[self._keys[pos]]))
        if len(self.reserved) == 0:
            return None
        offer = self.free[self.reserved]
        if end_s > self.reservation_s:
            offer = np.minimum(offer, self.spare[self.reserved])
        ok = offer >= chips
        if not ok.any():
            return None
        return int(self.reserved[np.argmin(np.where(ok, offer, np.iinfo(np.int64).max))])

    def offer(self, end_s: float) -> IntArray:
        """Chips each node can give a workload ending at `end_s`; -1 where it may not go."""
        cap = self.free.copy()
        if self.held:
            cap[self.held] = -1
        if len(self.reserved) and end_s > self.reservation_s:
            cap[self.reserved] = np.minimum(self.free, self.spare)[self.reserved]
        return cap

    def offer_after_preemption(self) -> IntArray:
        """Chips each node will have once stopping allocations leave; -1 where it may not go.

        Reserved nodes are left out: a gang placed by preemption has no declared end to test
        against the reservation.
        """
        cap = self.free + self.incoming
        if self.held:
            cap[self.held] = -1
        if len(self.reserved):
            cap[self.reserved] = -1
        return cap

    def take(self, nodes: list[int], chips: int, end_s: float) -> None:
        if chips == 0:
            return
        long_run = end_s > self.reservation_s
        for i in nodes:
            bucketed = self.status[i] == BUCKETED
            if self.free_list[i] == self.chips[i]:
                block = self.block_of[i]
                mates = [j for j in self.members[block] if self.status[j] == BUCKETED]
                for j in mates:
                    self._remove(j)
                self.free_list[i] -= chips
                self.block_empty[block] -= 1
                for j in mates:
                    self._add(j)
            else:
                if bucketed:
                    self._remove(i)
                self.free_list[i] -= chips
                if bucketed:
                    self._add(i)
            self.free[i] -= chips
            if self.status[i] == RESERVED and long_run:
                self.spare[i] -= chips

    def hold(self, nodes: list[int]) -> None:
        for i in nodes:
            self._leave_buckets(i, HELD)
            self.held.append(i)

    def reserve(self, nodes: list[int], spare: IntArray, at_s: float, workload_id: str) -> None:
        for i in nodes:
            self._leave_buckets(i, RESERVED)
        self.reserved = np.array(sorted(nodes), dtype=np.int64)
        self.spare[self.reserved] = spare[self.reserved]
        self.reservation_s = at_s
        self.reserved_for = workload_id

    def _leave_buckets(self, i: int, status: int) -> None:
        if self.status[i] == BUCKETED:
            self._remove(i)
        self.status[i] = status
