"""The fewest, least important allocations to stop so that a gang fits.

Candidates come in preemption order (borrowers of other tenants, lowest priority and latest
started first, then the workload's own lower-priority work when it may preempt it). Freeing a
longer prefix never hurts, so a binary search finds the shortest prefix after which the gang
fits (and, for own work, after which the tenant is back inside its guarantee). The prefix is
then trimmed: walking back from its most important member, a candidate is spared when the
chosen nodes still have room without it. The result is minimal: sparing any one victim more
would break the placement or the guarantee.

Cost: O(log k) placements of O(n + e) each, for n nodes of the flavor and e candidate tasks,
plus O(e) for the trim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rainier.scheduler.placement import place
from rainier.scheduler.running import VictimList
from rainier.scheduler.topology import FlavorNodes, IntArray
from rainier.scheduler.types import Workload


@dataclass(frozen=True, slots=True)
class PreemptionPlan:
    nodes: IntArray
    victims: IntArray  # rows of the running table, in preemption order


def plan_preemption(
    topo: FlavorNodes, base: IntArray, w: Workload, cands: VictimList, need_own_chips: int
) -> PreemptionPlan | None:
    """`base`: chips per node once stopping work leaves (-1 where the gang may not go)."""
    own_chips = np.zeros(len(cands) + 1, dtype=np.int64)
    own_chips[1:] = np.cumsum(np.where(cands.own, cands.chips, 0))
    bounds = np.searchsorted(cands.entry_owner, np.arange(len(cands) + 1), side="left")

    def offered(k: int) -> IntArray:
        end = int(bounds[k])
        freed = np.bincount(
            cands.entry_node[:end], weights=cands.entry_chips[:end], minlength=topo.size
        )
        return base + freed.astype(np.int64)

    def attempt(k: int) -> IntArray | None:
        if own_chips[k] < need_own_chips:
            return None
        return place(topo, offered(k), w.nodes, w.chips_per_node, w.within)

    if attempt(len(cands)) is None:
        return None
    lo, hi = 0, len(cands)
    while lo < hi:
        mid = (lo + hi) // 2
        if attempt(mid) is None:
            lo = mid + 1
        else:
            hi = mid
    nodes = attempt(lo)
    assert nodes is not None
    return PreemptionPlan(
        nodes, _trim(topo, offered(lo), nodes, w, cands, lo, bounds, need_own_chips)
    )


def _trim(
    topo: FlavorNodes,
    cap: IntArray,
    nodes: IntArray,
    w: Workload,
    cands: VictimList,
    k: int,
    bounds: IntArray,
    need_own_chips: int,
) -> IntArray:
    chosen = np.zeros(topo.size, dtype=bool)
    chosen[nodes] = True
    end = int(bounds[k])
    touching = np.zeros(k, dtype=bool)
    touching[cands.entry_owner[:end][chosen[cands.entry_node[:end]]]] = True
    keep = np.zeros(k, dtype=bool)
    own_total = int(np.where(cands.own[:k], cands.chips[:k], 0).sum())
    for j in range(k - 1, -1, -1):
        is_own = bool(cands.own[j])
        if not touching[j] and not is_own:
            continue
        chips = int(cands.chips[j])
        if is_own and own_total - chips < need_own_chips:
            keep[j] = True
            continue
        on = cands.entry_node[int(bounds[j]) : int(bounds[j + 1])]
        on = on[chosen[on]]
        cpn = int(cands.cpn[j])
        if len(on) and bool((cap[on] - cpn < w.chips_per_node).any()):
            keep[j] = True
            continue
        cap[on] -= cpn
        if is_own:
            own_total -= chips
    return cands.rows[:k][keep]
