"""Which chips of a node a task holds: the scheduler counts chips, this names them.

Pure: given a node's size and the indices its running tasks hold, it picks the lowest free
ones, so two tasks on one node never share a chip while the counts agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def pick_chips(node_chips: int, held: Iterable[int], want: int) -> list[int]:
    """`want` free chip indices of a node of `node_chips`, lowest first.

    When fewer are free than wanted (placements written before chips had names, or a node
    that shrank), the rest are the lowest indices of the node, shared rather than refused:
    the scheduler's count already admitted the task.
    """
    taken = set(held)
    free = [i for i in range(node_chips) if i not in taken]
    picked = free[:want]
    extra = [i for i in range(node_chips) if i not in picked]
    return sorted(picked + extra[: max(0, want - len(picked))])


def assign_gang(
    node_names: Sequence[str],
    chips_per_node: int,
    node_chips: Mapping[str, int],
    held: dict[str, set[int]],
) -> list[list[int]]:
    """Chips for each rank of a gang placed on `node_names` (one rank per entry); `held` is
    updated, so several admissions of one pass never pick the same chips."""
    out: list[list[int]] = []
    for name in node_names:
        taken = held.setdefault(name, set())
        picked = pick_chips(node_chips.get(name, chips_per_node), taken, chips_per_node)
        taken.update(picked)
        out.append(picked)
    return out


def held_chips(placements: Iterable[Mapping[str, object]]) -> dict[str, set[int]]:
    """The chips held per node by the given placements (`nodes` and `chips` by rank)."""
    held: dict[str, set[int]] = {}
    for placement in placements:
        nodes = placement.get("nodes") or []
        chips = placement.get("chips") or []
        assert isinstance(nodes, list) and isinstance(chips, list)
        for name, ids in zip(nodes, chips, strict=False):
            held.setdefault(str(name), set()).update(int(i) for i in ids)
    return held
