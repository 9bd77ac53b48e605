"""The Ray executor confines its tasks as the local one does: the actor on the node starts the
task in its sandbox and keeps how it ended. The escape probe of `tests/security` runs here too,
less the attempts that concern only the local executor's records or `cpu` cores."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..security.conftest import SECRET_NAME, needs_sandbox
from ..security.escapes import run_probe
from .raykit import Cloud, RayCluster, control_plane, job_state, wait_until

pytestmark = [pytest.mark.ray, needs_sandbox]
PY = sys.executable
# h200 chips hold no cores (their CPU is not fenced, see docs/security.md), and the Ray
# executor keeps a task's records in its actor, not in a folder a task could be pointed at
LOCAL_ONLY = ("use a core it was not given", "forge its own exit record")


@pytest.fixture
def sealed_ray(cluster: RayCluster, tmp_path: Path) -> Iterator[tuple[Cloud, str]]:
    secret = secrets.token_hex(16)
    os.environ[SECRET_NAME] = secret
    try:
        with control_plane(tmp_path / "home", "ray", cluster.address, "required") as cloud:
            yield cloud, secret
    finally:
        os.environ.pop(SECRET_NAME, None)


def test_a_hostile_job_on_ray_escapes_nothing(sealed_ray: tuple[Cloud, str]) -> None:
    cloud, secret = sealed_ray
    probed = run_probe(
        cloud,
        cloud.server.url,
        secret,
        skip=LOCAL_ONLY,
        job={"flavor": "h200", "chips_per_node": 2},  # both fit one node: others may be gone
    )
    escaped = {k: v for k, v in probed.results.items() if not v.startswith("blocked")}
    assert escaped == {}, escaped
    assert len(probed.results) >= 15
    assert probed.own["uid"] >= 1000
    alpha = cloud.tenant("alpha")
    assert alpha.get(f"/api/v1/jobs/{probed.alpha_job}")["state"] == "running"
    assert all(Path(f"/proc/{pid}").exists() for pid in probed.alpha_pids)
    nodes = {n["name"]: n["isolation"] for n in cloud.nodes()}
    assert "sandbox" in nodes.values()
    alpha.post(f"/api/v1/jobs/{probed.alpha_job}/stop")
    wait_until(job_state(alpha, probed.alpha_job, "stopped", "failed"), what="alpha's stop")


def test_a_ray_task_over_its_memory_ends_out_of_memory(sealed_ray: tuple[Cloud, str]) -> None:
    cloud, _ = sealed_ray
    beta = cloud.tenant("beta")
    hog = "x = bytearray(1 << 30); x[::4096] = b'1' * len(x[::4096]); print('not limited')"
    job = beta.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "hog",
            "flavor": "h200",
            "chips_per_node": 1,
            "command": [PY, "-c", hog],
            "memory_gb": 0.25,
        },
    )
    done = wait_until(job_state(beta, job["id"], "failed", "succeeded"), what="the hog")
    assert done["state"] == "failed"
    assert done["reason"].startswith("out of memory (limit 256 MiB)"), done["reason"]
