"""Capacity planning: the smallest cluster whose simulated queueing meets a target.

The size explored is the node count of one flavor (`flavor`), or, without one, of the largest
pool with every other pool scaled in proportion. Queueing delay falls as nodes are added but not
strictly (a run is one sample of a random process), so the search first brackets the target by
halving or doubling the current size, then bisects between the largest size seen to fail and the
smallest seen to pass. Every size simulated is reported, so a reader can see how flat or steep
the curve is around the answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from rainier.sim.engine import Simulation
from rainier.sim.errors import SimInputError
from rainier.sim.metrics import summarize
from rainier.sim.model import Cluster, FlavorPool, Trace
from rainier.sim.policies import make_policy
from rainier.sim.records import SimConfig

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TARGET = re.compile(
    r"^\s*(mean|p50|p95|p99)_(wait|jct)\s*(<=|<)\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*$"
)


@dataclass(frozen=True, slots=True)
class Target:
    stat: str
    metric: str
    op: str
    limit_s: float
    text: str

    def met(self, value: float) -> bool:
        return value <= self.limit_s if self.op == "<=" else value < self.limit_s

    def read(self, summary: dict[str, object]) -> float:
        """The target's metric from a summary; a run that left jobs out counts as infinitely bad."""
        if summary["unplaceable"] or summary["unfinished"]:
            return math.inf
        stats = summary[f"{self.metric}_s"]
        assert isinstance(stats, dict)
        value = stats[self.stat]
        return math.inf if value is None else float(value)


def parse_target(text: str) -> Target:
    m = _TARGET.match(text)
    if m is None:
        raise SimInputError(
            f"--target: {text!r} is not like 'p95_wait<1h' "
            "(mean|p50|p95|p99 _ wait|jct, < or <=, a number with unit s, m, h or d)"
        )
    stat, metric, op, number, unit = m.groups()
    return Target(stat, metric, op, float(number) * _UNITS[unit], text.strip())


@dataclass(frozen=True, slots=True)
class PlanPoint:
    nodes: int
    chips: int
    value_s: float
    met: bool


@dataclass(slots=True)
class CapacityPlan:
    target: Target
    flavor: str
    policy: str
    points: list[PlanPoint] = field(default_factory=list)
    best_nodes: int | None = None
    best_cluster: Cluster | None = None

    def curve(self) -> list[PlanPoint]:
        return sorted(self.points, key=lambda p: p.nodes)


def resize(cluster: Cluster, flavor: str | None, nodes: int) -> Cluster:
    ref = _reference(cluster, flavor)
    if flavor is not None:
        return cluster.with_nodes(flavor, nodes)
    scale = nodes / ref.nodes
    return replace(
        cluster,
        pools=tuple(
            replace(p, nodes=nodes if p is ref else max(1, math.ceil(p.nodes * scale)))
            for p in cluster.pools
        ),
    )


def _reference(cluster: Cluster, flavor: str | None) -> FlavorPool:
    if flavor is None:
        return max(cluster.pools, key=lambda p: p.chips)
    pool = cluster.pool(flavor)
    if pool is None:
        names = ", ".join(p.flavor for p in cluster.pools)
        raise SimInputError(f"--flavor: {flavor!r} is not in the cluster (it has {names})")
    return pool


def plan(
    cluster: Cluster,
    trace: Trace,
    target: Target,
    flavor: str | None = None,
    policy: str = "rainier",
    config: SimConfig | None = None,
    max_nodes: int = 1_000_000,
    progress: Callable[[PlanPoint], None] | None = None,
) -> CapacityPlan:
    ref = _reference(cluster, flavor)
    out = CapacityPlan(target, ref.flavor, policy)
    seen: dict[int, PlanPoint] = {}
    base = config or SimConfig()

    def evaluate(nodes: int) -> bool:
        if nodes in seen:
            return seen[nodes].met
        sized = resize(cluster, flavor, nodes)
        p = make_policy(policy, trace, base.queue_window)
        cfg = replace(base, queue_window=p.queue_window, skip_when_full=not p.preempts)
        value = target.read(summarize(Simulation(sized, trace, p.scheduler, policy, cfg).run()))
        point = PlanPoint(nodes, sum(q.chips for q in sized.pools), value, target.met(value))
        seen[nodes] = point
        out.points.append(point)
        if progress is not None:
            progress(point)
        return point.met

    start = ref.nodes
    lo, hi = 0, start
    if evaluate(start):
        probe = start // 2
        while probe >= 1:
            if not evaluate(probe):
                lo = probe
                break
            hi, probe = probe, probe // 2
    else:
        lo, probe = start, start * 2
        while True:
            if probe > max_nodes:
                return out
            if evaluate(probe):
                hi = probe
                break
            lo, probe = probe, probe * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if evaluate(mid):
            hi = mid
        else:
            lo = mid
    out.best_nodes = hi
    out.best_cluster = resize(cluster, flavor, hi)
    return out
