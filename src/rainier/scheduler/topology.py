"""The schedulable nodes of one flavor, laid out so that topology questions are array reductions.

Nodes are sorted by (zone, block, rack, name). Every zone, block and rack is then a contiguous
range of indices, so "how many nodes of each block can take 16 chips" is one `np.add.reduceat`
over a boolean mask instead of a Python loop, and the layout never depends on the order in which
the caller listed the nodes. Blocks and racks are identified by their full path (a rack named
"r1" in two blocks is two racks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rainier.scheduler.types import NodeInfo

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FlavorNodes:
    flavor: str
    names: tuple[str, ...]
    chips: IntArray
    block_of: IntArray
    block_starts: IntArray
    rack_starts: IntArray
    zone_block_starts: IntArray

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def block_count(self) -> int:
        return len(self.block_starts)

    def block_range(self, block: int) -> tuple[int, int]:
        end = self.block_starts[block + 1] if block + 1 < self.block_count else self.size
        return int(self.block_starts[block]), int(end)


def group_ends(starts: IntArray, size: int) -> IntArray:
    return np.append(starts[1:], size).astype(np.int64)


def build_flavors(nodes: Iterable[NodeInfo]) -> dict[str, FlavorNodes]:
    """Index the schedulable nodes per flavor; unschedulable nodes are left out entirely."""
    by_flavor: dict[str, list[NodeInfo]] = {}
    for node in nodes:
        if node.schedulable:
            by_flavor.setdefault(node.flavor, []).append(node)
    return {f: _index(f, by_flavor[f]) for f in sorted(by_flavor)}


def _index(flavor: str, nodes: list[NodeInfo]) -> FlavorNodes:
    keyed = sorted((n.zone, n.block, n.rack, n.name, n.chips) for n in nodes)
    zone, block, rack, names, chips = (list(col) for col in zip(*keyed, strict=True))
    zones, blocks, racks = (np.array(col, dtype=np.str_) for col in (zone, block, rack))
    zone_new = np.r_[True, zones[1:] != zones[:-1]]
    block_new = zone_new | np.r_[True, blocks[1:] != blocks[:-1]]
    rack_new = block_new | np.r_[True, racks[1:] != racks[:-1]]
    block_starts = np.flatnonzero(block_new).astype(np.int64)
    zone_starts = np.flatnonzero(zone_new).astype(np.int64)
    rack_starts = np.flatnonzero(rack_new).astype(np.int64)
    block_of = (np.cumsum(block_new) - 1).astype(np.int64)
    return FlavorNodes(
        flavor=flavor,
        names=tuple(names),
        chips=np.array(chips, dtype=np.int64),
        block_of=block_of,
        block_starts=block_starts,
        rack_starts=rack_starts,
        zone_block_starts=block_of[zone_starts],
    )
