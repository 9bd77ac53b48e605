"""A deployment's replica placed on a Ray worker node answers through the control plane's
gateway, which reaches it by the node's address."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from rainier.serve.tiny_model import build_tiny_llama

from .raykit import HEAD, Cloud, RayCluster, job_state, wait_until

pytestmark = pytest.mark.ray
READY_S = 300


def test_replica_on_a_worker_node_answers_through_the_gateway(
    ray_cloud: Cloud, cluster: RayCluster, tmp_path: Path
) -> None:
    tenant = ray_cloud.tenant("acme")
    blockers: list[dict[str, Any]] = []
    for i in range(len(cluster.names)):  # occupy the head: the replica must go to a worker
        job = tenant.post(
            "/api/v1/jobs",
            {
                "kind": "Job",
                "name": f"blocker-{i}",
                "command": [sys.executable, "-c", "import time; time.sleep(600)"],
                "flavor": "h200",
                "chips_per_node": 8,
                "grace_period_s": 1,
            },
        )
        blockers.append(wait_until(job_state(tenant, job["id"], "running"), 120, "a blocker"))
        if blockers[-1]["placement"] == [HEAD.name]:
            break
    assert blockers[-1]["placement"] == [HEAD.name]

    model = build_tiny_llama(tmp_path / "home" / "storage" / "acme" / "model")  # acme's prefix
    tenant.post("/api/v1/models", {"name": "tiny", "path": str(model)})
    tenant.post(
        "/api/v1/deployments",
        {
            "kind": "Deployment",
            "name": "chat",
            "model": "tiny",
            "flavor": "h200",
            "chips_per_replica": 8,
        },
    )
    wait_until(
        lambda: tenant.get("/api/v1/deployments/chat")["ready_replicas"] >= 1,
        READY_S,
        "the replica to be ready",
    )
    (replica,) = tenant.get("/api/v1/jobs", kind="replica", state=["running"])["items"]
    node = replica["placement"][0]
    taken = {n for b in blockers for n in b["placement"]}
    assert node != HEAD.name and node not in taken
    assert node in cluster.names

    client = OpenAI(base_url=f"{ray_cloud.server.url}/v1", api_key=tenant.key, max_retries=0)
    answer = client.completions.create(model="chat", prompt="hello from ray", max_tokens=4)
    assert answer.choices[0].text
    assert answer.usage is not None and answer.usage.completion_tokens >= 1
    metered = wait_until(
        lambda: tenant.get("/api/v1/deployments/chat/usage")["items"], 30, "the tokens"
    )
    assert metered[0]["output_tokens"] == answer.usage.completion_tokens

    tenant.delete("/api/v1/deployments/chat")
    for b in blockers:
        tenant.post(f"/api/v1/jobs/{b['id']}/stop")
    for b in blockers:
        wait_until(job_state(tenant, b["id"], "stopped"), 60, "a blocker to stop")
