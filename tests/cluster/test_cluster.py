"""rainier across separate hosts: a control host (PostgreSQL, the Ray head, the server, an
S3-protocol store) and three worker hosts that share nothing with it but the network.

One cluster serves the whole module; the test that loses a host runs last.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rainier.cli.client import Client

from .conftest import leftovers
from .hosts import Host
from .rainier_cluster import (
    FLAVOR,
    HOME,
    RainierCluster,
    has_object_store,
    rainier_cluster,
    wait_until,
)

TENANT = "acme"
STORAGE = f"{HOME}/storage/{TENANT}"  # the tenant's prefix: what its sandboxed tasks may read
CORPUS = f"{STORAGE}/corpus"
JOB_S = 150.0
NEEDS_STORE = "needs storage by URL (RAINIER_STORAGE_URL) and an S3-protocol server"

PREPARE = f"""
from pathlib import Path
from tests.on_ray.raykit import write_corpus
write_corpus(Path({CORPUS!r}))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RainierCluster]:
    before = set(leftovers())
    with rainier_cluster(tmp_path_factory.mktemp("cluster-logs")) as built:
        yield built
    left = set(leftovers()) - before
    assert not left, left


@pytest.fixture(scope="module")
def tenant(cluster: RainierCluster) -> Client:
    for host in cluster.workers.values():
        host.run(["python", "-c", PREPARE], timeout_s=120)  # each host its own copy
    return cluster.tenant(TENANT)


def train_job(name: str, steps: int, **extra: Any) -> dict[str, Any]:
    """A 2-node run of rainier's training runtime on the corpus each worker host holds."""
    train = {
        "data": [CORPUS], "preset": "tiny", "steps": steps, "batch_size": 4, "seq_len": 64,
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


def wait_for_job(client: Client, job_id: str, *states: str, timeout_s: float = JOB_S) -> Any:
    def check() -> Any:
        job = client.get(f"/api/v1/jobs/{job_id}")
        return job if job["state"] in states else None

    try:
        return wait_until(check, timeout_s, f"job {job_id} to be {states}", every_s=0.5)
    except AssertionError as exc:
        job = client.get(f"/api/v1/jobs/{job_id}")
        events = [e["message"] for e in job["events"]]
        raise AssertionError(f"{exc}\n{job['state']}: {job['reason']}\n{events}") from None


def host_logs(cluster: RainierCluster, job: dict[str, Any]) -> str:
    """What the job's tasks printed, read from their hosts' disks (for failure messages)."""
    found = []
    for task in job["tasks"]:
        host = cluster.workers.get(task["node"])
        if host is not None and host.alive:
            path = f"{HOME}/logs/{job['id']}/rank-{task['rank']}.log"
            found.append(f"== {task['node']} {path}\n{(host.read(path) or '')[-2000:]}")
    return "\n".join(found)


def jsonl(text: str | None) -> list[dict[str, Any]]:
    lines = []
    for line in (text or "").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_the_inventory_is_the_worker_hosts_at_their_own_addresses(
    cluster: RainierCluster,
) -> None:
    nodes = {n["name"]: n for n in cluster.nodes()}
    assert sorted(nodes) == sorted(cluster.workers)
    for name, host in cluster.workers.items():
        assert nodes[name]["address"] == host.address
        assert (nodes[name]["flavor"], nodes[name]["chips"]) == (FLAVOR, 8)
    assert cluster.control.address not in {n["address"] for n in nodes.values()}


def test_ddp_trains_across_two_hosts(cluster: RainierCluster, tenant: Client) -> None:
    submitted = tenant.post("/api/v1/jobs", train_job("ddp", steps=3))
    done = wait_for_job(tenant, submitted["id"], "succeeded", "failed")
    assert done["state"] == "succeeded", host_logs(cluster, done)
    rank0, rank1 = (cluster.workers[n] for n in done["placement"])
    assert rank0 is not rank1
    metrics = f"{HOME}/checkpoints/{done['id']}/metrics.jsonl"
    lines = jsonl(rank0.read(metrics))  # rank 0 wrote them on its own disk
    start = next(x for x in lines if x.get("event") == "start")
    assert start["rank_count"] == 2
    assert sorted(x["step"] for x in lines if "loss" in x) == [1, 2, 3]
    assert cluster.control.read(metrics) is None  # ... which the control host has no view of


def _on(host: Host, path: str) -> bool:
    return host.run(["test", "-e", path], check=False).returncode == 0


def test_a_host_lost_mid_run_restarts_its_gang_on_the_other_hosts(
    cluster: RainierCluster, tenant: Client
) -> None:
    submitted = tenant.post(
        "/api/v1/jobs",
        train_job(
            "resilient", steps=1_000_000, checkpoint_every=3, max_restarts=1,
            grace_period_s=5,
        ),
    )  # fmt: skip
    job_id = submitted["id"]
    ckpt = f"{HOME}/checkpoints/{job_id}"

    def running() -> Any:
        job = tenant.get(f"/api/v1/jobs/{job_id}")
        return job if sum(t["state"] == "running" for t in job["tasks"]) == 2 else None

    placed = wait_until(running, JOB_S, "both ranks to run", every_s=0.5)["placement"]
    rank0 = cluster.workers[placed[0]]
    wait_until(
        lambda: rank0.run(["sh", "-c", f"ls -d {ckpt}/step-*"], check=False).returncode == 0,
        JOB_S,
        "a first checkpoint",
        every_s=0.5,
    )
    rank0.kill()  # the host holding the checkpoint on its disk: only the store still has it

    def restarted() -> Any:
        job = tenant.get(f"/api/v1/jobs/{job_id}")
        current = [t for t in job["tasks"] if t["attempt"] == job["attempt"]]
        ok = job["attempt"] >= 1 and len(current) == 2
        return job if ok and all(t["state"] == "running" for t in current) else None

    again = wait_until(restarted, JOB_S, "attempt 1 to run", every_s=0.5)
    assert rank0.name not in again["placement"] and len(set(again["placement"])) == 2
    lost = [t for t in again["tasks"] if t["attempt"] == 0 and t["node"] == rank0.name]
    assert lost and lost[0]["state"] == "lost"
    events = [e["message"] for e in again["events"]]
    assert any(f"node {rank0.name} left the Ray cluster" in m for m in events), events
    if not has_object_store():
        tenant.post(f"/api/v1/jobs/{job_id}/stop")
        wait_for_job(tenant, job_id, "stopped", "failed")
        pytest.skip(f"resuming at the checkpoint's step on another host {NEEDS_STORE}")
