"""Pure shaping of API answers into what a page shows: chips per flavor, the fleet's tree,
the queue. No I/O: the pages fetch, these fold."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rainier.store.lifecycle import PLACED_JOB_STATES, JobState

LIVE = PLACED_JOB_STATES


@dataclass
class FlavorChips:
    flavor: str
    guaranteed: int = 0
    borrow_limit: int = 0
    in_use: int = 0

    @property
    def borrowed(self) -> int:
        return max(0, self.in_use - self.guaranteed)

    @property
    def idle_guaranteed(self) -> int:
        return max(0, self.guaranteed - self.in_use)


def chips_by_flavor(
    contracts: list[dict[str, Any]], jobs: list[dict[str, Any]]
) -> list[FlavorChips]:
    """Guaranteed (summed over the tenant's contracts) vs in use (its running gangs) per flavor;
    what is in use beyond the guarantee is borrowed from idle chips and may be reclaimed."""
    table: dict[str, FlavorChips] = {}
    for contract in contracts:
        spec = contract.get("spec") or {}
        for flavor, chips in (spec.get("guaranteed_chips") or {}).items():
            table.setdefault(flavor, FlavorChips(flavor)).guaranteed += int(chips)
        for flavor, chips in (spec.get("borrow_limit_chips") or {}).items():
            table.setdefault(flavor, FlavorChips(flavor)).borrow_limit += int(chips)
    for job in jobs:
        if job.get("state") in LIVE:
            row = table.setdefault(job["flavor"], FlavorChips(job["flavor"]))
            row.in_use += int(job["nodes"]) * int(job["chips_per_node"])
    return sorted(table.values(), key=lambda r: r.flavor)


@dataclass
class NodeView:
    name: str
    flavor: str
    chips: int
    used: int
    schedulable: bool
    by_tenant: dict[str, int] = field(default_factory=dict)
    isolation: str = "unknown"  # what its tasks get: sandbox, none or unknown

    @property
    def free(self) -> int:
        return max(0, self.chips - self.used)


@dataclass
class Rack:
    name: str
    nodes: list[NodeView] = field(default_factory=list)


@dataclass
class Block:
    name: str
    racks: list[Rack] = field(default_factory=list)

    @property
    def chips(self) -> int:
        return sum(n.chips for r in self.racks for n in r.nodes)

    @property
    def used(self) -> int:
        return sum(n.used for r in self.racks for n in r.nodes)


@dataclass
class Zone:
    name: str
    blocks: list[Block] = field(default_factory=list)


def fleet(nodes: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> list[Zone]:
    """Nodes as their topology (zone > block > rack > node), each with the chips every tenant's
    running gangs hold on it."""
    held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for job in jobs:
        if job.get("state") in LIVE:
            for node in job.get("placement") or []:
                held[node][job["tenant"]] += int(job["chips_per_node"])
    tree: dict[str, dict[str, dict[str, list[NodeView]]]] = {}
    for n in sorted(nodes, key=lambda n: (n["zone"], n["block"], n["rack"], n["name"])):
        view = NodeView(
            n["name"],
            n["flavor"],
            int(n["chips"]),
            int(n.get("used_chips", 0)),
            bool(n.get("schedulable", True)),
            dict(sorted(held.get(n["name"], {}).items())),
            str(n.get("isolation", "unknown")),
        )
        tree.setdefault(n["zone"], {}).setdefault(n["block"], {}).setdefault(n["rack"], []).append(
            view
        )
    return [
        Zone(z, [Block(b, [Rack(r, ns) for r, ns in racks.items()]) for b, racks in blocks.items()])
        for z, blocks in tree.items()
    ]


@dataclass
class TenantQueue:
    tenant: str
    waiting: list[dict[str, Any]] = field(default_factory=list)
    running_chips: dict[str, int] = field(default_factory=dict)
    guaranteed: dict[str, int] = field(default_factory=dict)

    @property
    def borrowed(self) -> dict[str, int]:
        return {
            f: used - self.guaranteed.get(f, 0)
            for f, used in self.running_chips.items()
            if used > self.guaranteed.get(f, 0)
        }


def queue(jobs: list[dict[str, Any]], contracts: list[dict[str, Any]]) -> list[TenantQueue]:
    """Per tenant: its waiting gangs (with the scheduler's reason), chips running per flavor,
    and what of that is borrowed beyond its guarantee (the first to go when owners reclaim)."""
    tenants: dict[str, TenantQueue] = {}
    for contract in contracts:
        row = tenants.setdefault(contract["tenant"], TenantQueue(contract["tenant"]))
        for flavor, chips in ((contract.get("spec") or {}).get("guaranteed_chips") or {}).items():
            row.guaranteed[flavor] = row.guaranteed.get(flavor, 0) + int(chips)
    for job in jobs:
        row = tenants.setdefault(job["tenant"], TenantQueue(job["tenant"]))
        if job["state"] == JobState.PENDING:
            row.waiting.append(job)
        elif job["state"] in LIVE:
            chips = int(job["nodes"]) * int(job["chips_per_node"])
            row.running_chips[job["flavor"]] = row.running_chips.get(job["flavor"], 0) + chips
    for row in tenants.values():
        row.waiting.sort(key=lambda j: j["created_at"])
    return sorted(tenants.values(), key=lambda r: r.tenant)
