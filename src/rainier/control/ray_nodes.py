"""How a Ray cluster's nodes read as rainier nodes: a pure function of `ray.nodes()`.

A Ray node is a rainier node when it advertises chips as a custom resource named
`rainier-chips-<flavor>` (e.g. `rainier-chips-h200: 8`); nodes without one (a head kept for the
control plane, a CPU pool of another team) are left alone. Its topology comes from the node labels
`rainier.io/zone`, `rainier.io/block` and `rainier.io/rack`, and its name from `rainier.io/node`,
or `ray-` and the first 12 hex digits of its Ray node id when that label is absent; a name may
have at most 35 characters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rainier.catalog import FLAVORS
from rainier.control.executor import ExecutorNodes
from rainier.scheduler import NodeInfo

log = logging.getLogger("rainier.ray")

CHIPS_PREFIX = "rainier-chips-"
LABEL_PREFIX = "rainier.io/"
NODE_ID_LABEL = "ray.io/node-id"
MAX_NAME_CHARS = 35  # the nodes table keys a discovered node as `node-<name>` in 40 characters


def chips_resource(flavor: str) -> str:
    return f"{CHIPS_PREFIX}{flavor}"


@dataclass(frozen=True)
class RayNode:
    name: str
    node_id: str
    address: str
    info: NodeInfo
    gpus: float = 0.0


@dataclass
class Snapshot:
    """The cluster as last seen: live rainier nodes by name, and every node id Ray reported."""

    nodes: dict[str, RayNode] = field(default_factory=dict)
    alive_ids: set[str] = field(default_factory=set)
    dead_ids: set[str] = field(default_factory=set)

    def inventory(self) -> ExecutorNodes:
        return ExecutorNodes(
            nodes=[n.info for n in self.nodes.values()],
            addresses={name: n.address for name, n in self.nodes.items()},
        )


def read_nodes(raw: Iterable[Mapping[str, Any]]) -> Snapshot:
    snapshot = Snapshot()
    for entry in raw:
        node_id = str(entry.get("NodeID", ""))
        if not entry.get("Alive", False):
            snapshot.dead_ids.add(node_id)
            continue
        snapshot.alive_ids.add(node_id)
        node = _rainier_node(node_id, entry)
        if node is None:
            continue
        if node.name in snapshot.nodes:
            log.warning("two Ray nodes are named %s; ignoring %s", node.name, node_id)
            continue
        snapshot.nodes[node.name] = node
    return snapshot


def _rainier_node(node_id: str, entry: Mapping[str, Any]) -> RayNode | None:
    resources: Mapping[str, float] = entry.get("Resources") or {}
    chips = sorted(
        (key.removeprefix(CHIPS_PREFIX), int(value))
        for key, value in resources.items()
        if key.startswith(CHIPS_PREFIX)
    )
    if not chips:
        return None
    flavor, count = chips[0]
    if len(chips) > 1:
        log.warning("Ray node %s advertises several flavors; using %s", node_id, flavor)
    if flavor not in FLAVORS:
        log.warning("Ray node %s advertises unknown flavor %r; ignoring it", node_id, flavor)
        return None
    labels: Mapping[str, str] = entry.get("Labels") or {}
    name = labels.get(f"{LABEL_PREFIX}node") or f"ray-{node_id[:12]}"
    if len(name) > MAX_NAME_CHARS:
        log.warning(
            "Ray node %s: name %r is longer than %d characters; ignoring it",
            node_id,
            name,
            MAX_NAME_CHARS,
        )
        return None
    info = NodeInfo(
        name=name,
        flavor=flavor,
        chips=count,
        zone=labels.get(f"{LABEL_PREFIX}zone", ""),
        block=labels.get(f"{LABEL_PREFIX}block", ""),
        rack=labels.get(f"{LABEL_PREFIX}rack", ""),
    )
    return RayNode(
        name=name,
        node_id=node_id,
        address=str(entry.get("NodeManagerAddress", "")),
        info=info,
        gpus=float(resources.get("GPU", 0.0)),
    )
