"""rainier on a real multi-node Ray cluster: inventory, pinned gangs, DDP across nodes, a task
that serves, crash safety of `start`, and a node lost in the middle of a training job.

The node-loss test removes a node for good, so it runs last in this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from rainier.config import Settings
from rainier.control.executor import TaskLaunch, TaskStatus
from rainier.control.ray import RayExecutor

from .raykit import (
    HEAD,
    Cloud,
    RayCluster,
    job_state,
    read_jsonl,
    tasks_running,
    wait_for_job,
    wait_until,
    write_corpus,
)

pytestmark = pytest.mark.ray
PY = sys.executable


def h200_job(name: str, command: list[str], **extra: object) -> dict[str, object]:
    return {
        "kind": "Job",
        "name": name,
        "command": command,
        "flavor": "h200",
        "chips_per_node": 8,
        **extra,
    }


def test_inventory_lists_the_ray_nodes_with_flavor_chips_and_labels(
    cluster: RayCluster, ray_cloud: Cloud
) -> None:
    nodes = wait_until(
        lambda: (found := ray_cloud.nodes()) and len(found) == len(cluster.names) and found
    )
    by_name = {n["name"]: n for n in nodes}
    assert sorted(by_name) == sorted(cluster.names)
    for name, spec in cluster.specs.items():
        node = by_name[name]
        assert (node["flavor"], node["chips"]) == (spec.flavor, spec.chips)
        assert (node["zone"], node["block"]) == (spec.zone, spec.block)
        assert node["source"] == "ray" and node["schedulable"]
        assert node["address"]
    unnamed = [name for name, spec in cluster.specs.items() if not spec.named]
    assert unnamed and all(name.startswith("ray-") for name in unnamed)


def test_gang_tasks_run_on_the_ray_nodes_they_were_placed_on(
    cluster: RayCluster, ray_cloud: Cloud
) -> None:
    tenant = ray_cloud.tenant("acme")
    code = (
        "import os, json, pathlib; "
        "pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'rank-' + os.environ['RANK'])"
        ".write_text(json.dumps({k: os.environ[k] for k in ('RAINIER_NODE', 'RAINIER_RAY_NODE_ID')}))"
    )
    submitted = tenant.post("/api/v1/jobs", h200_job("pinned", [PY, "-c", code], nodes=2))
    done = wait_until(job_state(tenant, submitted["id"], "succeeded", "failed"))
    assert done["state"] == "succeeded"
    ckpt = ray_cloud.settings.checkpoints_dir / done["id"]
    ranks = [json.loads((ckpt / f"rank-{r}").read_text()) for r in (0, 1)]
    assert [r["RAINIER_NODE"] for r in ranks] == done["placement"]
    assert len({r["RAINIER_RAY_NODE_ID"] for r in ranks}) == 2
    for r in ranks:
        assert r["RAINIER_RAY_NODE_ID"] == cluster.node_id(r["RAINIER_NODE"])


def test_a_task_serves_on_its_node_address(ray_cloud: Cloud) -> None:
    tenant = ray_cloud.tenant("acme")
    server = (
        "import http.server, os, pathlib\n"
        "class Hello(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = os.environ['RAINIER_NODE'].encode()\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
        "address = (os.environ['RAINIER_NODE_ADDRESS'], int(os.environ['MASTER_PORT']))\n"
        "srv = http.server.HTTPServer(address, Hello)\n"
        "ready = pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'ready')\n"
        "ready.write_text('%s:%d' % srv.server_address)\n"
        "srv.serve_forever()\n"
    )
    submitted = tenant.post("/api/v1/jobs", h200_job("replica", [PY, "-c", server]))
    ready = ray_cloud.settings.checkpoints_dir / submitted["id"] / "ready"
    wait_until(ready.exists, what="the server to listen")
    job = tenant.get(f"/api/v1/jobs/{submitted['id']}")
    node = job["placement"][0]
    address = {n["name"]: n["address"] for n in ray_cloud.nodes()}[node]
    assert ready.read_text().startswith(f"{address}:")
    assert httpx.get(f"http://{ready.read_text()}/", timeout=10).text == node
    tenant.post(f"/api/v1/jobs/{submitted['id']}/stop")
    assert wait_until(job_state(tenant, submitted["id"], "stopped"))["state"] == "stopped"


def one_task(cluster: RayCluster, tmp_path: Path) -> tuple[Settings, TaskLaunch, Path]:
    """A control plane's settings for `cluster`, and a one-chip task on the head node that
    appends a line to the file returned, once per run."""
    settings = Settings.from_env(
        home=tmp_path / "home", executor="ray", ray_address=cluster.address
    )
    runs = tmp_path / "runs"
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    launch = TaskLaunch(
        task_id=f"{job_id}.a0.r0",
        job_id=job_id,
        node=HEAD.name,
        command=[PY, "-c", f"open({str(runs)!r}, 'a').write('ran\\n')"],
        env={},
        log_path=tmp_path / "logs" / "rank-0.log",
        chips=1,
        flavor="h200",
        gang_nodes=(HEAD.name,),
    )
    return settings, launch, runs


def ran_once_and_released(
    executor: RayExecutor, launch: TaskLaunch, handle: dict[str, Any], runs: Path
) -> None:
    """The task exits 0 having run once, and its finished actor is then released."""

    def ended() -> TaskStatus | None:
        status = executor.status(launch.task_id, handle)
        return status if status.state != "running" else None

    assert wait_until(ended) == TaskStatus("exited", 0)
    assert runs.read_text() == "ran\n"

    def released() -> bool:
        executor.inventory()
        try:
            ray.get_actor(handle["actor"], namespace="rainier")
        except ValueError:
            return True
        return False

    wait_until(released, what="the finished task's actor to be released")


def test_start_never_runs_a_task_twice_even_across_a_restart(
    cluster: RayCluster, tmp_path: Path
) -> None:
    settings, launch, runs = one_task(cluster, tmp_path)
    first = RayExecutor(settings)
    first.inventory()
    handle = first.start(launch)
    assert first.start(launch)["actor"] == handle["actor"]
    first.close()

    restarted = RayExecutor(settings)
    restarted.inventory()
    again = restarted.start(launch)
    assert again["actor"] == handle["actor"]

    ran_once_and_released(restarted, launch, handle, runs)
    assert restarted.status(launch.task_id, handle).state == "lost"
    with pytest.raises(LookupError, match="not a live node"):
        restarted.start(TaskLaunch(**{**launch.__dict__, "task_id": "x.a0.r0", "node": "nope"}))
    restarted.close()


def test_a_task_claimed_by_a_control_plane_that_died_before_creating_it_still_runs(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """`start` claims the task in the GCS and then creates its actor; a control plane killed
    between the two leaves a claim with no actor. The next one must create it, once, not adopt
    a task that never ran and later find it lost."""
    settings, launch, runs = one_task(cluster, tmp_path)
    died = RayExecutor(settings)
    died.inventory()
    assert not died._kv_claim(f"task/{launch.task_id}", f"{launch.job_id}.a0"), "a fresh id"
    died.close()

    restarted = RayExecutor(settings)
    restarted.inventory()
    handle = restarted.start(launch)
    assert restarted.start(launch)["actor"] == handle["actor"]

    ran_once_and_released(restarted, launch, handle, runs)
    again = RayExecutor(settings)
    again.inventory()
    assert again.start(launch)["actor"] == handle["actor"]
    assert again.status(launch.task_id, handle).state == "lost", "adopted, not run again"
    again.close()
    assert runs.read_text() == "ran\n"
    restarted.close()


def _train_command(
    corpus: Path, cache: Path, steps: int, batch_size: int, *extra: str
) -> list[str]:
    return [
        PY,
        "-m",
        "rainier.train",
        "--data",
        str(corpus),
        "--data-cache",
        str(cache),
        "--preset",
        "tiny",
        "--steps",
        str(steps),
        "--batch-size",
        str(batch_size),
        "--seq-len",
        "64",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--log-every",
        "1",
        "--no-register",
        "--eval-batches",
        "1",
        *extra,
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from rainier.train import data
    from rainier.train.config import PRESETS

    root = tmp_path_factory.mktemp("train")
    corpus, cache = write_corpus(root / "corpus"), root / "cache"
    data.prepare([str(corpus)], cache, PRESETS["tiny"].vocab_size)
    return corpus, cache


def _losses(lines: list[dict[str, Any]]) -> dict[int, float]:
    return {int(x["step"]): float(x["loss"]) for x in lines if "loss" in x}


def test_ddp_across_two_nodes_matches_one_process_with_the_same_global_batch(
    ray_cloud_unconfined: Cloud, corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    data, cache = corpus
    steps = 4
    reference = tmp_path / "reference"
    single = subprocess.Popen(
        [*_train_command(data, cache, steps, 8), "--checkpoint-dir", str(reference)],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAINIER_", "RAY_"))},
            "OMP_NUM_THREADS": "1",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    tenant = ray_cloud_unconfined.tenant("acme")
    metrics = tmp_path / "ddp.jsonl"
    command = _train_command(data, cache, steps, 4, "--metrics-file", str(metrics))
    submitted = tenant.post("/api/v1/jobs", h200_job("ddp", command, nodes=2))
    try:
        _, stderr = single.communicate(timeout=120)
    finally:
        single.kill()
    assert single.returncode == 0, stderr[-2000:]
    expected = _losses(read_jsonl(reference / "metrics.jsonl"))
    assert sorted(expected) == list(range(1, steps + 1))
    done = wait_for_job(tenant, submitted["id"], "succeeded", "failed", timeout_s=120)
    log = tenant.get(f"/api/v1/jobs/{submitted['id']}/logs")["data"]
    assert done["state"] == "succeeded", log[-2000:]
    assert len(set(done["placement"])) == 2
    lines = read_jsonl(metrics)
    start = next(x for x in lines if x.get("event") == "start")
    assert start["rank_count"] == 2
    got = _losses(lines)
    assert sorted(got) == sorted(expected)
    for step, loss in expected.items():
        assert abs(got[step] - loss) < 1e-4, (step, got[step], loss)


def _resumed(path: Path) -> dict[str, Any] | None:
    """Attempt 1's start line, once attempt 1 has also trained a step past it."""
    lines = read_jsonl(path)
    for i, line in enumerate(lines):
        if line.get("event") == "start" and int(line.get("attempt") or 0) >= 1:
            later = [x for x in lines[i + 1 :] if "loss" in x and x["step"] > line["step"]]
            return line if later else None
    return None


def test_a_node_lost_mid_job_restarts_the_gang_from_its_checkpoint_elsewhere(
    cluster: RayCluster, ray_cloud_unconfined: Cloud, corpus: tuple[Path, Path]
) -> None:
    data, cache = corpus
    tenant = ray_cloud_unconfined.tenant("acme")
    command = _train_command(data, cache, 1_000_000, 8, "--checkpoint-every", "3")
    submitted = tenant.post(
        "/api/v1/jobs",
        h200_job("resilient", command, nodes=2, max_restarts=1, grace_period_s=10),
    )
    job_id = submitted["id"]
    ckpt = ray_cloud_unconfined.settings.checkpoints_dir / job_id
    running = wait_until(tasks_running(tenant, job_id, 2), timeout_s=60)
    wait_until(lambda: list(ckpt.glob("step-*")), timeout_s=90, what="a first checkpoint")
    victim = next(name for name in reversed(running["placement"]) if name != HEAD.name)
    cluster.remove(victim)

    wait_until(
        lambda: victim not in {n["name"] for n in ray_cloud_unconfined.nodes()},
        what="the removed node to leave the inventory",
    )
    resumed = wait_until(
        lambda: _resumed(ckpt / "metrics.jsonl"), timeout_s=120, what="attempt 1 to train"
    )
    assert resumed["step"] >= 3 and resumed["resumed_from"]
    tenant.post(f"/api/v1/jobs/{job_id}/stop")
    done = wait_for_job(tenant, job_id, "stopped", "failed", timeout_s=60)
    assert done["state"] == "stopped", done["reason"]
    # one restart for the lost node; a restart placed on the dying node before the inventory
    # noticed is requeued without spending another
    assert done["restarts"] == 1 and done["attempt"] >= 1
    first = [t for t in done["tasks"] if t["attempt"] == 0]
    assert any(t["node"] == victim and t["state"] == "lost" for t in first)
    assert victim not in done["placement"] and len(set(done["placement"])) == 2
    last = [t["exit_code"] for t in done["tasks"] if t["attempt"] == done["attempt"]]
    assert last == [0, 0]
    events = [e["message"] for e in done["events"]]
    assert any("lost" in m and f"node {victim} left the Ray cluster" in m for m in events), events
