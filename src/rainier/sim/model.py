"""The simulator's inputs: a trace of jobs and a cluster with its tenants' contracts.

These are plain dataclasses so that traces of a million jobs stay cheap to build and to copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from rainier.scheduler.types import NodeInfo, Quota, WorkloadKind


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One submission. `duration_s` is the true run time, which only the SJF oracle may read."""

    id: str
    submit_s: float
    tenant: str
    flavor: str
    nodes: int
    chips_per_node: int
    duration_s: float
    priority: int = 0
    kind: WorkloadKind = "job"
    checkpoint_interval_s: float | None = None
    max_duration_s: float | None = None
    grace_period_s: float = 30.0
    preemptible: bool = True

    @property
    def chips(self) -> int:
        return self.nodes * self.chips_per_node


@dataclass(frozen=True, slots=True)
class Trace:
    jobs: Sequence[TraceJob]

    def sorted(self) -> Trace:
        return Trace(sorted(self.jobs, key=lambda j: (j.submit_s, j.id)))


@dataclass(frozen=True, slots=True)
class FlavorPool:
    """All nodes of one flavor, laid out zone > rack > block (an NVLink / NeuronLink domain)."""

    flavor: str
    nodes: int
    chips_per_node: int
    nodes_per_block: int = 1
    blocks_per_rack: int = 1
    zones: int = 1

    @property
    def chips(self) -> int:
        return self.nodes * self.chips_per_node


@dataclass(frozen=True, slots=True)
class TenantContract:
    tenant: str
    guaranteed_chips: dict[str, int] = field(default_factory=dict)
    borrow_limit_chips: dict[str, int] | None = None
    weight: float | None = None
    priority_tier: int = 0
    discount: Decimal = Decimal("0")

    def quota(self) -> Quota:
        return Quota(
            tenant=self.tenant,
            guaranteed_chips=dict(self.guaranteed_chips),
            borrow_limit_chips=(
                None if self.borrow_limit_chips is None else dict(self.borrow_limit_chips)
            ),
            weight=self.weight,
            priority_tier=self.priority_tier,
        )


@dataclass(frozen=True, slots=True)
class Cluster:
    pools: tuple[FlavorPool, ...]
    tenants: tuple[TenantContract, ...] = ()

    def pool(self, flavor: str) -> FlavorPool | None:
        for p in self.pools:
            if p.flavor == flavor:
                return p
        return None

    def with_nodes(self, flavor: str, nodes: int) -> Cluster:
        return replace(
            self,
            pools=tuple(replace(p, nodes=nodes) if p.flavor == flavor else p for p in self.pools),
        )

    def node_infos(self) -> list[NodeInfo]:
        """Names and topology labels; blocks fill racks, racks are split evenly over zones."""
        out: list[NodeInfo] = []
        for p in self.pools:
            racks = max(1, -(-p.nodes // (p.nodes_per_block * p.blocks_per_rack)))
            for i in range(p.nodes):
                block = i // p.nodes_per_block
                rack = block // p.blocks_per_rack
                zone = rack * p.zones // racks
                out.append(
                    NodeInfo(
                        name=f"{p.flavor}-{i:06d}",
                        flavor=p.flavor,
                        chips=p.chips_per_node,
                        zone=f"zone-{zone}",
                        block=f"{p.flavor}-block-{block}",
                        rack=f"{p.flavor}-rack-{rack}",
                    )
                )
        return out

    def quotas(self) -> list[Quota]:
        return [t.quota() for t in self.tenants]

    def guaranteed(self, tenant: str, flavor: str) -> int:
        for t in self.tenants:
            if t.tenant == tenant:
                return t.guaranteed_chips.get(flavor, 0)
        return 0
