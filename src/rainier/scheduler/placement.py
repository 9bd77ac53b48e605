"""Where a gang goes, given how many chips each node of its flavor can offer it.

`place()` is complete: it returns a placement whenever one exists under the topology constraint
(every constraint is "some group has at least N eligible nodes"), which is what makes the
reservation estimate exact. Among the placements that exist it packs tightly:

- `within=rack|block`: the group with the fewest eligible nodes that still holds the gang
  (best fit), so big empty groups stay whole for big gangs.
- `within=zone`: the best-fit zone, then packed inside it as below.
- no constraint: one block if any block can hold it (best fit); otherwise inside one zone if any
  zone can, filling the blocks with the most eligible nodes first and finishing with the
  best-fit block for the remainder; otherwise the same across zones.
- inside a group, nodes with the fewest offered chips first (best fit), then topology order.

Cost: O(n) numpy work for n nodes of the flavor plus O(b log b) for b blocks; no Python loop
over nodes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rainier.scheduler.topology import FlavorNodes, IntArray, group_ends
from rainier.scheduler.types import TopologyLevel

BoolArray = npt.NDArray[np.bool_]


def place(
    topo: FlavorNodes, cap: IntArray, nodes: int, chips_per_node: int, within: TopologyLevel | None
) -> IntArray | None:
    """Indices (topology order) of `nodes` distinct nodes with `cap >= chips_per_node`, or None."""
    if nodes <= 0 or topo.size == 0:
        return None
    elig = cap >= chips_per_node
    if within == "rack":
        return _one_group(elig, cap, topo.rack_starts, topo.size, nodes)
    if within == "block":
        return _one_group(elig, cap, topo.block_starts, topo.size, nodes)
    per_block = np.add.reduceat(elig, topo.block_starts, dtype=np.int64)
    per_zone = np.add.reduceat(per_block, topo.zone_block_starts, dtype=np.int64)
    if within == "zone":
        zone = _best_fit(per_zone, nodes)
        if zone is None:
            return None
        return _spread_in_zone(topo, elig, cap, per_block, zone, nodes)
    if int(per_zone.sum()) < nodes:
        return None
    block = _best_fit(per_block, nodes)
    if block is not None:
        return _take(elig, cap, *topo.block_range(block), nodes)
    zone = _best_fit(per_zone, nodes)
    if zone is not None:
        return _spread_in_zone(topo, elig, cap, per_block, zone, nodes)
    order = np.argsort(-per_zone, kind="stable")
    parts: list[IntArray] = []
    left = nodes
    for z in order:
        have = int(per_zone[z])
        if have == 0:
            break
        take = min(have, left)
        part = _spread_in_zone(topo, elig, cap, per_block, int(z), take)
        assert part is not None
        parts.append(part)
        left -= take
        if left == 0:
            break
    return np.sort(np.concatenate(parts))


def _best_fit(counts: IntArray, need: int) -> int | None:
    """The first group with the fewest eligible nodes among those with at least `need`."""
    fits = counts >= need
    if not fits.any():
        return None
    return int(np.argmin(np.where(fits, counts, np.iinfo(np.int64).max)))


def _one_group(
    elig: BoolArray, cap: IntArray, starts: IntArray, size: int, need: int
) -> IntArray | None:
    counts = np.add.reduceat(elig, starts, dtype=np.int64)
    group = _best_fit(counts, need)
    if group is None:
        return None
    ends = group_ends(starts, size)
    return _take(elig, cap, int(starts[group]), int(ends[group]), need)


def _take(elig: BoolArray, cap: IntArray, lo: int, hi: int, need: int) -> IntArray:
    idx = lo + np.flatnonzero(elig[lo:hi])
    if len(idx) > need:
        idx = idx[np.argsort(cap[idx], kind="stable")[:need]]
    return np.sort(idx)


def _spread_in_zone(
    topo: FlavorNodes, elig: BoolArray, cap: IntArray, per_block: IntArray, zone: int, need: int
) -> IntArray | None:
    b_lo = int(topo.zone_block_starts[zone])
    b_hi = (
        int(topo.zone_block_starts[zone + 1])
        if zone + 1 < len(topo.zone_block_starts)
        else topo.block_count
    )
    counts = per_block[b_lo:b_hi]
    inside = _best_fit(counts, need)
    if inside is not None:
        return _take(elig, cap, *topo.block_range(b_lo + inside), need)
    order = np.argsort(-counts, kind="stable")
    cum = np.cumsum(counts[order])
    if len(cum) == 0 or int(cum[-1]) < need:
        return None
    full = int(np.searchsorted(cum, need))
    whole = np.zeros(topo.block_count, dtype=bool)
    whole[b_lo + order[:full]] = True
    parts: list[IntArray] = [np.flatnonzero(elig & whole[topo.block_of])]
    left = need - (int(cum[full - 1]) if full > 0 else 0)
    rest = counts[order[full:]]
    last = full + int(np.flatnonzero(rest >= left)[-1])
    parts.append(_take(elig, cap, *topo.block_range(b_lo + int(order[last])), left))
    return np.sort(np.concatenate(parts))
