from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from rainier.sim.engine import Simulation
from rainier.sim.model import Cluster, FlavorPool, TenantContract, Trace, TraceJob
from rainier.sim.policies import make_policy
from rainier.sim.records import SimConfig, SimResult


def job(
    id: str,
    submit_s: float,
    duration_s: float,
    tenant: str = "a",
    nodes: int = 1,
    chips_per_node: int = 1,
    **extra: object,
) -> TraceJob:
    return TraceJob(
        id=id,
        submit_s=submit_s,
        tenant=tenant,
        flavor=str(extra.pop("flavor", "h200")),
        nodes=nodes,
        chips_per_node=chips_per_node,
        duration_s=duration_s,
        **extra,  # type: ignore[arg-type]
    )


def cluster(
    nodes: int = 4, chips_per_node: int = 8, tenants: Iterable[TenantContract] = ()
) -> Cluster:
    return Cluster((FlavorPool("h200", nodes, chips_per_node),), tuple(tenants))


def run(c: Cluster, jobs: list[TraceJob] | Trace, policy: str, **config: object) -> SimResult:
    trace = jobs if isinstance(jobs, Trace) else Trace(jobs)
    p = make_policy(policy, trace)
    config.setdefault("queue_window", p.queue_window)
    cfg = SimConfig(skip_when_full=not p.preempts, **config)  # type: ignore[arg-type]
    return Simulation(c, trace, p.scheduler, policy, cfg).run()


def random_gangs(n: int, seed: int, tenants: int = 3, load_s: float = 240.0) -> list[TraceJob]:
    """Mixed gangs with honest time limits (2x the run time); about 85% load on 48 chips."""
    rng = np.random.default_rng(seed)
    submits = np.cumsum(rng.exponential(load_s, n))
    out = []
    for i in range(n):
        nodes = int(rng.choice([1, 1, 1, 2, 4]))
        cpn = int(rng.choice([1, 2, 4, 8])) if nodes == 1 else 8
        duration = float(rng.lognormal(6.0, 1.2))
        out.append(
            job(
                f"r{i}",
                float(submits[i]),
                duration,
                tenant=f"t{i % tenants}",
                nodes=nodes,
                chips_per_node=cpn,
                max_duration_s=2 * duration,
                checkpoint_interval_s=300.0,
            )
        )
    return out


@pytest.fixture
def gangs() -> list[TraceJob]:
    return random_gangs(1500, seed=3)
