"""The generator against the data it draws from."""

from __future__ import annotations

import numpy as np
import pytest

from rainier.sim.cluster import parse_cluster
from rainier.sim.generator import (
    GeneratorConfig,
    data_file,
    generate,
    offered_load,
    read_runtimes,
    read_tenant_sizes,
)
from rainier.sim.model import Trace

CLUSTER = """\
flavors:
  h200: {nodes: 64, chips_per_node: 8}
  trn2: {nodes: 32, chips_per_node: 16}
tenants:
  big: {guaranteed_chips: {h200: 256}}
  small: {guaranteed_chips: {trn2: 64}}
"""


@pytest.fixture(scope="module")
def runtimes() -> np.ndarray:
    return read_runtimes(data_file("philly_runtime.csv"))


@pytest.fixture(scope="module")
def sizes() -> dict[str, float]:
    return read_tenant_sizes(data_file("helios_venus_vc_gpus.csv"))


@pytest.fixture(scope="module")
def trace(runtimes: np.ndarray, sizes: dict[str, float]) -> Trace:
    return generate(runtimes, sizes, None, GeneratorConfig(jobs=40_000, seed=1))


def test_run_times_follow_philly(trace: Trace, runtimes: np.ndarray) -> None:
    generated = np.array([j.duration_s for j in trace.jobs])
    source = np.maximum(runtimes, 1.0)
    assert np.median(generated) == pytest.approx(np.median(source), rel=0.1)
    for q in (25, 75, 90):
        assert np.percentile(generated, q) == pytest.approx(np.percentile(source, q), rel=0.15)


def test_job_sizes_follow_published_philly_figures(trace: Trace) -> None:
    chips = np.array([j.chips for j in trace.jobs])
    assert np.median(chips) == 1
    assert chips.mean() == pytest.approx(1.93, rel=0.1)
    assert chips.max() <= 128
    for j in trace.jobs:
        assert j.chips_per_node <= 8 and (j.nodes == 1 or j.chips_per_node == 8)


def test_tenants_submit_in_proportion_to_their_size(trace: Trace, sizes: dict[str, float]) -> None:
    counts: dict[str, int] = {}
    for j in trace.jobs:
        counts[j.tenant] = counts.get(j.tenant, 0) + 1
    assert set(counts) <= set(sizes)
    total = sum(sizes.values())
    for tenant, size in sizes.items():
        expected = size / total * len(trace.jobs)
        if expected > 1000:
            assert counts[tenant] == pytest.approx(expected, rel=0.1)


def test_arrivals_hit_the_requested_load(runtimes: np.ndarray, sizes: dict[str, float]) -> None:
    cluster = parse_cluster(CLUSTER)
    trace = generate(runtimes, sizes, cluster, GeneratorConfig(jobs=20_000, seed=2, load=0.7))
    assert offered_load(trace, cluster) == pytest.approx(0.7, rel=0.25)
    assert {j.tenant for j in trace.jobs} == {"big", "small"}
    flavors = {f: sum(j.chips for j in trace.jobs if j.flavor == f) for f in ("h200", "trn2")}
    assert flavors["h200"] == pytest.approx(flavors["trn2"], rel=0.2)
    assert all(
        j.max_duration_s is not None and j.max_duration_s >= j.duration_s for j in trace.jobs
    )


def test_same_seed_same_trace(runtimes: np.ndarray, sizes: dict[str, float]) -> None:
    a = generate(runtimes, sizes, None, GeneratorConfig(jobs=500, seed=4))
    b = generate(runtimes, sizes, None, GeneratorConfig(jobs=500, seed=4))
    c = generate(runtimes, sizes, None, GeneratorConfig(jobs=500, seed=5))
    assert a == b and a != c
