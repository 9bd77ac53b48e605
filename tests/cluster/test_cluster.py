"""rainier across separate hosts: a control host (PostgreSQL, the Ray head, the server, an
S3-protocol store) and three worker hosts that share nothing with it but the network. Data,
checkpoints and models travel through the store, output and endpoints over HTTP.

One cluster serves the whole module; the test that loses a host runs last.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from rainier.cli.client import Client

from .conftest import leftovers
from .rainier_cluster import BUCKET, FLAVOR, HOME, RainierCluster, rainier_cluster, wait_until

TENANT = "acme"
JOB_S = 180.0
WORDS = "the model learns tokens from text while gradients flow through layers of attention"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RainierCluster]:
    before = set(leftovers())
    with rainier_cluster(tmp_path_factory.mktemp("cluster-logs")) as built:
        yield built
    left = set(leftovers()) - before
    assert not left, left


@pytest.fixture(scope="module")
def tenant(cluster: RainierCluster) -> Client:
    return cluster.tenant(TENANT)


@pytest.fixture(scope="module")
def corpus(cluster: RainierCluster) -> str:
    """The tenant's dataset, uploaded by the operator to the tenant's prefix in the store."""
    words = WORDS.split()
    for i in range(4):
        lines = [" ".join(words[(j + k) % len(words)] for k in range(9)) for j in range(300)]
        key = f"cloud/{TENANT}/datasets/corpus/notes-{i}.txt"
        cluster.s3.put_object(Bucket=BUCKET, Key=key, Body="\n".join(lines).encode())
    return f"s3://{BUCKET}/cloud/{TENANT}/datasets/corpus/"


def train_job(name: str, corpus: str, steps: int, **extra: Any) -> dict[str, Any]:
    """A 2-node run of rainier's training runtime on the dataset in the store."""
    train = {
        "data": [corpus], "preset": "tiny", "steps": steps, "batch_size": 4, "seq_len": 64,
        "seed": 3, "log_every": 1, "checkpoint_every": extra.pop("checkpoint_every", 0),
    }  # fmt: skip
    return {
        "kind": "Job",
        "name": name,
        "train": train,
        "flavor": FLAVOR,
        "chips_per_node": 8,
        "nodes": 2,
        **extra,
    }


def job_logs(client: Client, job_id: str) -> str:
    text: str = client.get(f"/api/v1/jobs/{job_id}/logs")["data"]
    return text


def wait_for_job(client: Client, job_id: str, *states: str, timeout_s: float = JOB_S) -> Any:
    def check() -> Any:
        job = client.get(f"/api/v1/jobs/{job_id}")
        return job if job["state"] in states else None

    try:
        return wait_until(check, timeout_s, f"job {job_id} to be {states}", every_s=0.5)
    except AssertionError as exc:
        job = client.get(f"/api/v1/jobs/{job_id}")
        events = [e["message"] for e in job["events"]]
        logs = job_logs(client, job_id)[-3000:]
        raise AssertionError(f"{exc}\n{job['state']}: {job['reason']}\n{events}\n{logs}") from None


def events(text: str) -> list[dict[str, Any]]:
    """The runtime's JSON lines in a job's output (each may carry a `[rank N]` prefix)."""
    found = []
    for line in text.splitlines():
        start = line.find("{")
        if start >= 0:
            try:
                found.append(json.loads(line[start:]))
            except ValueError:
                continue
    return found


def stored(cluster: RainierCluster, prefix: str) -> list[str]:
    listed = cluster.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


@pytest.fixture(scope="module")
def trained(cluster: RainierCluster, tenant: Client, corpus: str) -> dict[str, Any]:
    submitted = tenant.post("/api/v1/jobs", train_job("ddp", corpus, steps=4))
    done = wait_for_job(tenant, submitted["id"], "succeeded", "failed")
    assert done["state"] == "succeeded", job_logs(tenant, done["id"])[-3000:]
    return dict(done)


def test_the_inventory_is_the_worker_hosts_at_their_own_addresses(
    cluster: RainierCluster,
) -> None:
    nodes = {n["name"]: n for n in cluster.nodes()}
    assert sorted(nodes) == sorted(cluster.workers)
    for name, host in cluster.workers.items():
        assert nodes[name]["address"] == host.address
        assert (nodes[name]["flavor"], nodes[name]["chips"]) == (FLAVOR, 8)
    assert cluster.control.address not in {n["address"] for n in nodes.values()}


def test_ddp_trains_across_two_hosts_from_and_into_the_store(
    cluster: RainierCluster, tenant: Client, trained: dict[str, Any]
) -> None:
    job_id = trained["id"]
    assert len(set(trained["placement"])) == 2
    lines = events(job_logs(tenant, job_id))  # both ranks' output, over HTTP
    start = next(x for x in lines if x.get("event") == "start")
    assert start["rank_count"] == 2
    assert sorted({x["step"] for x in lines if "loss" in x}) == [1, 2, 3, 4]
    job_prefix = f"cloud/{TENANT}/jobs/{job_id}"
    assert any(k.startswith(f"{job_prefix}/checkpoints/") for k in stored(cluster, job_prefix))
    assert any(k.startswith(f"{job_prefix}/export/") for k in stored(cluster, job_prefix))
    (model,) = [m for m in tenant.get("/api/v1/models")["items"] if m["job_id"] == job_id]
    assert model["path"] == f"s3://{BUCKET}/{job_prefix}/export"
    for path in (f"{HOME}/checkpoints/{job_id}", f"{HOME}/work/{job_id}"):
        assert cluster.control.run(["test", "-e", path], check=False).returncode != 0, path


def test_logs_follow_both_ranks_live_from_the_control_host(
    cluster: RainierCluster, tenant: Client, tmp_path: Path
) -> None:
    ticks = (
        "import os, time\n"
        "for i in range(600):\n"
        "    print(f'tick {i} of rank {os.environ[\"RANK\"]}', flush=True); time.sleep(0.2)\n"
    )
    job = {
        "kind": "Job",
        "name": "ticks",
        "command": [sys.executable, "-c", ticks],
        "flavor": FLAVOR,
        "chips_per_node": 8,
        "nodes": 2,
        "grace_period_s": 2,
    }
    submitted = tenant.post("/api/v1/jobs", job)
    out = tmp_path / "follow.out"
    follower = cluster.control.spawn(
        ["rainier", "logs", "-f", "--rank", "all", submitted["id"]],
        out,
        env={"RAINIER_URL": cluster.url, "RAINIER_API_KEY": tenant.key or ""},
    )

    def seen(rank: int, at_least: int) -> bool:
        text = out.read_text()
        return any(f"[rank {rank}] tick {i} of rank {rank}" in text for i in range(at_least, 600))

    wait_until(lambda: seen(0, 5) and seen(1, 5), JOB_S, "both ranks' ticks", every_s=0.2)
    assert tenant.get(f"/api/v1/jobs/{submitted['id']}")["state"] == "running"  # live
    assert follower.poll() is None
    tenant.post(f"/api/v1/jobs/{submitted['id']}/stop")
    wait_for_job(tenant, submitted["id"], "stopped", "failed")
    wait_until(lambda: follower.poll() is not None, 60, "the follower to end with the job")


def test_a_deployment_of_the_trained_model_answers_through_the_gateway(
    cluster: RainierCluster, tenant: Client, trained: dict[str, Any]
) -> None:
    tenant.post(
        "/api/v1/deployments",
        {
            "kind": "Deployment",
            "name": "chat",
            "model": "ddp",
            "flavor": FLAVOR,
            "chips_per_replica": 8,
        },
    )
    try:
        wait_until(
            lambda: tenant.get("/api/v1/deployments/chat")["ready_replicas"] >= 1,
            JOB_S,
            "a replica to be ready",
            every_s=0.5,
        )
        (replica,) = tenant.get("/api/v1/jobs", kind="replica", state=["running"])["items"]
        assert replica["placement"][0] in cluster.workers  # on a worker host, not the control
        client = OpenAI(base_url=f"{cluster.url}/v1", api_key=tenant.key, max_retries=0)
        answer = client.completions.create(model="chat", prompt="the model learns", max_tokens=4)
        assert answer.choices[0].text
        assert answer.usage is not None and answer.usage.completion_tokens >= 1
    finally:
        tenant.delete("/api/v1/deployments/chat")


def _resumed(text: str) -> dict[str, Any] | None:
    """Attempt 1's start line, once attempt 1 has trained a step past it."""
    lines = events(text)
    for i, line in enumerate(lines):
        if line.get("event") == "start" and int(line.get("attempt") or 0) >= 1:
            later = [x for x in lines[i + 1 :] if "loss" in x and x["step"] > line["step"]]
            return line if later else None
    return None


def test_a_host_lost_mid_run_resumes_on_another_host_from_the_stored_checkpoint(
    cluster: RainierCluster, tenant: Client, corpus: str
) -> None:
    steps = 24
    submitted = tenant.post(
        "/api/v1/jobs",
        train_job("resilient", corpus, steps, checkpoint_every=3, max_restarts=1,
                  grace_period_s=5),
    )  # fmt: skip
    job_id = submitted["id"]
    checkpoints = f"cloud/{TENANT}/jobs/{job_id}/checkpoints/"

    def running() -> Any:
        job = tenant.get(f"/api/v1/jobs/{job_id}")
        return job if sum(t["state"] == "running" for t in job["tasks"]) == 2 else None

    placed = wait_until(running, JOB_S, "both ranks to run", every_s=0.5)["placement"]
    whole = lambda: [k for k in stored(cluster, checkpoints) if k.endswith("/_MANIFEST.json")]  # noqa: E731
    wait_until(whole, JOB_S, "a checkpoint stored whole", every_s=0.2)
    victim = cluster.workers[placed[0]]  # rank 0: the host that wrote the checkpoints
    victim.kill()

    resumed = wait_until(
        lambda: _resumed(job_logs(tenant, job_id)), JOB_S, "attempt 1 to train", every_s=0.5
    )
    assert resumed["step"] >= 3 and resumed["step"] % 3 == 0 and resumed["resumed_from"]
    done = wait_for_job(tenant, job_id, "succeeded", "failed", timeout_s=300)
    assert done["state"] == "succeeded", done["reason"]
    assert done["restarts"] == 1 and victim.name not in done["placement"]
    first = [t for t in done["tasks"] if t["attempt"] == 0]
    assert any(t["node"] == victim.name and t["state"] == "lost" for t in first)
    messages = [e["message"] for e in done["events"]]
    assert any(f"node {victim.name} left the Ray cluster" in m for m in messages), messages
    lines = events(job_logs(tenant, job_id))
    first_line = next(i for i, x in enumerate(lines) if x == resumed)
    after = [x["step"] for x in lines[first_line:] if "loss" in x]
    assert sorted(set(after)) == list(range(resumed["step"] + 1, steps + 1))
    exported = stored(cluster, f"cloud/{TENANT}/jobs/{job_id}/export/")
    assert exported
