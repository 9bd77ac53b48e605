"""Invariants of any run, for every policy, on random small traces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rainier.sim.model import TenantContract, TraceJob
from rainier.sim.records import DONE

from .conftest import cluster, run

CLUSTER = cluster(3, 8, [TenantContract("a", {"h200": 8}), TenantContract("b", {"h200": 8})])


@st.composite
def traces(draw: st.DrawFn) -> list[TraceJob]:
    n = draw(st.integers(1, 25))
    jobs = []
    for i in range(n):
        nodes = draw(st.integers(1, 3))
        jobs.append(
            TraceJob(
                id=f"p{i}",
                submit_s=float(draw(st.integers(0, 2000))),
                tenant=draw(st.sampled_from(["a", "b", "c"])),
                flavor="h200",
                nodes=nodes,
                chips_per_node=draw(st.sampled_from([1, 2, 4, 8])),
                duration_s=float(draw(st.integers(1, 900))),
                priority=draw(st.sampled_from([0, 0, 5])),
                checkpoint_interval_s=draw(st.sampled_from([None, 60.0])),
                max_duration_s=1000.0,
                grace_period_s=draw(st.sampled_from([0.0, 30.0])),
            )
        )
    return jobs


@pytest.mark.parametrize("policy", ["rainier", "fifo", "backfill", "sjf"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs=traces())
def test_run_invariants(policy: str, jobs: list[TraceJob]) -> None:
    result = run(CLUSTER, jobs, policy)
    for js in result.jobs:
        assert js.state == DONE
        assert js.waited_s >= -1e-9
        assert js.end_s - js.job.submit_s >= js.job.duration_s - 1e-6
        assert js.held_s >= js.job.duration_s - 1e-6
        assert (
            js.held_s * js.chips
            == pytest.approx(js.job.duration_s * js.chips + js.lost_chip_s, abs=1e-6)
            or js.timed_out
        )
        if js.preemptions == 0:
            jct = js.end_s - js.job.submit_s
            assert jct == pytest.approx(js.waited_s + js.job.duration_s)
    held = sum(js.held_s * js.chips for js in result.jobs)
    assert sum(result.tenant_chip_s.values()) == pytest.approx(held)
    busy = np.frombuffer(result.utilization["h200"].value, dtype=np.float64)
    assert busy.min() >= 0 and busy.max() <= 24 and busy[-1] == 0
