"""When could a blocked gang start, and on which nodes: the reservation that stops starvation.

Chips come back when allocations end. An allocation ends at `started_s + max_duration_s`; a
stopping one at the latest `now + grace_period_s` (it was told to leave); one without
`max_duration_s` is counted as never ending, since nothing bounds it. Work admitted earlier in
the same pass counts the same way. Held nodes (promised to a gang that preempted for them) are
left out. Free chips only grow with time, and placement is complete, so the earliest start is
the first release time at which `place()` succeeds: a binary search over release times.

Cost: O(log r) placements of O(n + r) each, for r release events and n nodes of the flavor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rainier.scheduler.placement import place
from rainier.scheduler.topology import FlavorNodes, IntArray
from rainier.scheduler.types import Workload

FloatArray = npt.NDArray[np.float64]
_NOWHERE = -(1 << 40)


@dataclass(frozen=True, slots=True)
class Releases:
    """One entry per task of a running allocation: node, chips, when they come back."""

    node: IntArray
    chips: IntArray
    end_s: FloatArray


@dataclass(frozen=True, slots=True)
class Reservation:
    start_s: float
    nodes: IntArray
    offer: IntArray


def earliest_start(
    topo: FlavorNodes,
    free: IntArray,
    held: list[int],
    releases: Releases,
    now_s: float,
    w: Workload,
) -> Reservation | None:
    base = free.copy()
    if held:
        base[held] = _NOWHERE
    finite = np.isfinite(releases.end_s)
    ends = np.maximum(releases.end_s[finite], now_s)
    order = np.argsort(ends, kind="stable")
    ends, node, chips = ends[order], releases.node[finite][order], releases.chips[finite][order]
    times = np.unique(ends)
    if len(times) == 0:
        return None

    def offer_at(i: int) -> IntArray:
        end = int(np.searchsorted(ends, times[i], side="right"))
        freed = np.bincount(node[:end], weights=chips[:end], minlength=topo.size)
        return base + freed.astype(np.int64)

    def fits(i: int) -> IntArray | None:
        return place(topo, offer_at(i), w.nodes, w.chips_per_node, w.within)

    if fits(len(times) - 1) is None:
        return None
    lo, hi = 0, len(times) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid) is None:
            lo = mid + 1
        else:
            hi = mid
    nodes = fits(lo)
    assert nodes is not None
    return Reservation(float(times[lo]), nodes, offer_at(lo))
