"""One Ray cluster for the whole test run, started only if a test asks for it, and the
`executor` fixture that runs the shared tests against the local executor and against Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .raykit import Cloud, RayCluster, Target, control_plane, ray_cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster() as found:
        yield found


@pytest.fixture
def ray_cloud(cluster: RayCluster, tmp_path: Path) -> Iterator[Cloud]:
    """Tasks in the sandbox wherever this machine has one, as in production: they hand files
    to the test through their own checkpoint folder and read inputs from the tenant's storage
    prefix."""
    with control_plane(tmp_path / "home", "ray", cluster.address) as cloud:
        yield cloud


@pytest.fixture
def ray_cloud_unconfined(cluster: RayCluster, tmp_path: Path) -> Iterator[Cloud]:
    """Tasks unconfined, for the tests that run the training runtime with a hand-written
    command line (to compare it with one process): a `command` job declares no inputs, so its
    sandbox would hold no data. The same work, sandboxed as a `train:` job, runs in
    tests/cluster."""
    with control_plane(tmp_path / "home", "ray", cluster.address, isolation="off") as cloud:
        yield cloud


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def executor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "local":
        with control_plane(tmp_path / "home", "local") as cloud:
            for name in ("n1", "n2"):
                cloud.op.post(
                    "/api/v1/nodes",
                    {"kind": "Node", "name": name, "flavor": "cpu", "chips": 2},
                )
            yield Target(cloud, cloud.tenant("acme"), "cpu", 2)
        return
    found: RayCluster = request.getfixturevalue("cluster")
    with control_plane(tmp_path / "home", "ray", found.address) as cloud:
        yield Target(cloud, cloud.tenant("acme"), "h200", 8)
