"""The cluster file: flavors (how many nodes, their layout) and tenants' contracts, in YAML.

    flavors:
      trn2: {nodes: 64, chips_per_node: 16, nodes_per_block: 4, blocks_per_rack: 2, zones: 2}
    tenants:
      acme: {guaranteed_chips: {trn2: 256}, borrow_limit_chips: {trn2: 128}, discount: 0.1}

A planner edits this file by hand, so every mistake is reported with the field path and the line.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from rainier.catalog import FLAVORS
from rainier.sim.errors import SimInputError
from rainier.sim.model import Cluster, FlavorPool, TenantContract

_POOL_FIELDS = ("nodes", "chips_per_node", "nodes_per_block", "blocks_per_rack", "zones")
_TENANT_FIELDS = (
    "guaranteed_chips",
    "borrow_limit_chips",
    "weight",
    "priority_tier",
    "discount",
)


def _lines(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            _lines(value, sub, out)
            out[sub] = key.start_mark.line + 1


class _Where:
    def __init__(self, source: str, lines: dict[tuple[str, ...], int]):
        self.source = source
        self.lines = lines

    def error(self, path: tuple[str, ...], message: str) -> SimInputError:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        at = f"{self.source} line {line}" if line else self.source
        return SimInputError(f"{at}: {'.'.join(path) or '(top)'}: {message}")


def parse_cluster(text: str, source: str = "cluster") -> Cluster:
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SimInputError(f"{source}: not valid YAML: {exc}") from None
    lines: dict[tuple[str, ...], int] = {}
    if root is not None:
        _lines(root, (), lines)
    where = _Where(source, lines)
    if not isinstance(data, dict):
        raise where.error((), "must be a mapping with 'flavors' and 'tenants'")
    for key in data:
        if key not in ("flavors", "tenants"):
            raise where.error((str(key),), "unknown field; expected 'flavors' or 'tenants'")
    flavors = data.get("flavors")
    if not isinstance(flavors, dict) or not flavors:
        raise where.error(("flavors",), "must map at least one flavor to its nodes")
    pools = tuple(_pool(where, str(name), spec) for name, spec in flavors.items())
    tenants_data = data.get("tenants") or {}
    if not isinstance(tenants_data, dict):
        raise where.error(("tenants",), "must map tenant names to contracts")
    tenants = tuple(
        _tenant(where, str(name), spec or {}, set(flavors)) for name, spec in tenants_data.items()
    )
    return Cluster(pools=pools, tenants=tenants)


def load_cluster(path: str | Path) -> Cluster:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SimInputError(f"{p}: cannot read: {exc.strerror}") from None
    return parse_cluster(text, source=str(p))


def _int(where: _Where, path: tuple[str, ...], value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.error(path, f"must be an integer >= {minimum}; got {value!r}")
    return value


def _pool(where: _Where, name: str, spec: Any) -> FlavorPool:
    path = ("flavors", name)
    if name not in FLAVORS:
        raise where.error(path, f"unknown flavor; known: {', '.join(sorted(FLAVORS))}")
    if not isinstance(spec, dict):
        raise where.error(path, "must be a mapping with 'nodes' and 'chips_per_node'")
    for key in spec:
        if key not in _POOL_FIELDS:
            raise where.error((*path, str(key)), f"unknown field; known: {', '.join(_POOL_FIELDS)}")
    for key in ("nodes", "chips_per_node"):
        if key not in spec:
            raise where.error((*path, key), "missing")
    return FlavorPool(
        flavor=name,
        nodes=_int(where, (*path, "nodes"), spec["nodes"], 1),
        chips_per_node=_int(where, (*path, "chips_per_node"), spec["chips_per_node"], 1),
        nodes_per_block=_int(where, (*path, "nodes_per_block"), spec.get("nodes_per_block", 1), 1),
        blocks_per_rack=_int(where, (*path, "blocks_per_rack"), spec.get("blocks_per_rack", 1), 1),
        zones=_int(where, (*path, "zones"), spec.get("zones", 1), 1),
    )


def _chips_map(
    where: _Where, path: tuple[str, ...], value: Any, flavors: set[str]
) -> dict[str, int]:
    if not isinstance(value, dict):
        raise where.error(path, "must map flavors to chip counts")
    out: dict[str, int] = {}
    for flavor, chips in value.items():
        if flavor not in flavors:
            raise where.error((*path, str(flavor)), "not a flavor of this cluster")
        out[str(flavor)] = _int(where, (*path, str(flavor)), chips, 0)
    return out


def _tenant(where: _Where, name: str, spec: Any, flavors: set[str]) -> TenantContract:
    path = ("tenants", name)
    if not isinstance(spec, dict):
        raise where.error(path, "must be a mapping (guaranteed_chips, borrow_limit_chips, ...)")
    for key in spec:
        if key not in _TENANT_FIELDS:
            raise where.error(
                (*path, str(key)), f"unknown field; known: {', '.join(_TENANT_FIELDS)}"
            )
    borrow = spec.get("borrow_limit_chips")
    weight = spec.get("weight")
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0
    ):
        raise where.error((*path, "weight"), f"must be a number > 0; got {weight!r}")
    try:
        discount = Decimal(str(spec.get("discount", 0)))
    except InvalidOperation:
        raise where.error((*path, "discount"), "must be a number in [0, 1)") from None
    if not Decimal(0) <= discount < Decimal(1):
        raise where.error((*path, "discount"), f"must be in [0, 1); got {discount}")
    return TenantContract(
        tenant=name,
        guaranteed_chips=_chips_map(
            where, (*path, "guaranteed_chips"), spec.get("guaranteed_chips", {}), flavors
        ),
        borrow_limit_chips=(
            None
            if borrow is None
            else _chips_map(where, (*path, "borrow_limit_chips"), borrow, flavors)
        ),
        weight=None if weight is None else float(weight),
        priority_tier=_int(where, (*path, "priority_tier"), spec.get("priority_tier", 0), 0),
        discount=discount,
    )


def dump_cluster(cluster: Cluster) -> str:
    flavors = {
        p.flavor: {
            "nodes": p.nodes,
            "chips_per_node": p.chips_per_node,
            "nodes_per_block": p.nodes_per_block,
            "blocks_per_rack": p.blocks_per_rack,
            "zones": p.zones,
        }
        for p in cluster.pools
    }
    tenants: dict[str, dict[str, Any]] = {}
    for t in cluster.tenants:
        entry: dict[str, Any] = {"guaranteed_chips": dict(t.guaranteed_chips)}
        if t.borrow_limit_chips is not None:
            entry["borrow_limit_chips"] = dict(t.borrow_limit_chips)
        if t.weight is not None:
            entry["weight"] = t.weight
        if t.priority_tier:
            entry["priority_tier"] = t.priority_tier
        if t.discount:
            entry["discount"] = float(t.discount)
        tenants[t.tenant] = entry
    return yaml.safe_dump({"flavors": flavors, "tenants": tenants}, sort_keys=False)
