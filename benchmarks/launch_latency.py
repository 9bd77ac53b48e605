"""Launch latency: from `POST /api/v1/jobs` to the task's process running.

"Running" means the command itself has started (it touches a file in its checkpoint folder first
thing), which is later than the task row turning `running` (the executor accepted it); both are
reported. Local: a 1-task job on the embedded server with the local executor, in its sandbox
where this machine can give one (`local_isolation` says which), and again with
`RAINIER_ISOLATION=off`: the difference is what the sandbox costs a task's start. Ray: a 2-node gang on a two-node Ray
cluster started on this machine (a head and a worker, each with 8 `h200` chips and, like real
machines, a few CPUs: Ray keeps that many idle Python workers per node, and an actor that finds
one starts without waiting for a new process), until both ranks run. Medians over several jobs;
the last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client
from rainier.config import Settings
from rainier.control.sandbox import probe

POLL_S = 0.005
DEADLINE_S = 120.0


def wait(predicate: Callable[[], bool], what: str) -> float:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return time.perf_counter()


@contextmanager
def server(
    home: Path, executor: str, ray_address: str | None = None, isolation: str = "auto"
) -> Iterator[Client]:
    settings = Settings.from_env(
        home=home,
        database_url=f"sqlite:///{home / 'rainier.db'}",
        port=0,
        executor=executor,
        ray_address=ray_address,
        isolation=isolation,
    )
    with EmbeddedServer(settings) as srv:
        op = Client(srv.url, Client(srv.url).post("/api/v1/init")["key"])
        op.post("/api/v1/tenants", {"kind": "Tenant", "name": "bench"})
        if executor == "local":
            op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 1})
        else:
            wait(lambda: len(op.get("/api/v1/nodes")["items"]) >= 2, "the Ray nodes")
        key = op.post("/api/v1/keys", {"tenant": "bench", "role": "admin"})["key"]
        yield Client(srv.url, key)


def launch(
    client: Client, home: Path, name: str, nodes: int, flavor: str, chips: int
) -> tuple[float, float]:
    """Seconds from submission to every task row running, and to every process running."""
    job = {
        "kind": "Job",
        "name": name,
        "command": ["/bin/sh", "-c", 'touch "$RAINIER_CHECKPOINT_DIR/r$RANK"; exec sleep 300'],
        "nodes": nodes,
        "flavor": flavor,
        "chips_per_node": chips,
        "grace_period_s": 0,
    }
    t0 = time.perf_counter()
    job_id = client.post("/api/v1/jobs", job)["id"]
    marks = home / "checkpoints" / job_id
    rows = processes = 0.0
    deadline = time.monotonic() + DEADLINE_S
    while not (rows and processes):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {name} to run")
        now = time.perf_counter()
        if not processes and marks.is_dir() and len(list(marks.glob("r*"))) == nodes:
            processes = now - t0
        if not rows:
            tasks = client.get(f"/api/v1/jobs/{job_id}")["tasks"]
            if len([t for t in tasks if t["state"] == "running"]) == nodes:
                rows = now - t0
        time.sleep(POLL_S)
    client.post(f"/api/v1/jobs/{job_id}/stop")
    wait(lambda: client.get(f"/api/v1/jobs/{job_id}")["state"] == "stopped", f"{name} to stop")
    return rows, processes


@contextmanager
def ray_cluster(node_cpus: int) -> Iterator[str]:
    """A head and a worker on this machine, Ray's files in a temp dir, token auth on."""
    temp = Path(tempfile.mkdtemp(prefix="rr-"))
    os.environ.update(
        RAY_TMPDIR=str(temp), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16)
    )
    import ray
    from ray.cluster_utils import Cluster

    def node(name: str, block: str) -> dict[str, Any]:
        labels = {"rainier.io/node": name, "rainier.io/zone": "z", "rainier.io/block": block}
        return {"num_cpus": node_cpus, "resources": {"rainier-chips-h200": 8}, "labels": labels}

    cluster = Cluster(
        initialize_head=True, head_node_args={**node("head", "b1"), "include_dashboard": False}
    )
    try:
        cluster.add_node(**node("worker", "b2"))
        ray.init(
            address=cluster.address,
            namespace="rainier",
            logging_level="WARNING",
            log_to_driver=False,
        )
        yield str(cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local-runs", type=int, default=7)
    parser.add_argument("--ray-runs", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="measure the local executor only")
    parser.add_argument("--node-cpus", type=int, default=2, help="CPUs each Ray node offers")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rainier-bench-") as tmp:
        root = Path(tmp)
        for label, isolation in (("local", "auto"), ("local_bare", "off")):
            with server(root / label, "local", isolation=isolation) as client:
                runs = [
                    launch(client, root / label, f"l{i}", 1, "cpu", 1)
                    for i in range(args.local_runs)
                ]
            out[f"{label}_submit_to_running_s"] = round(statistics.median(p for _, p in runs), 4)
            out[f"{label}_submit_to_task_row_running_s"] = round(
                statistics.median(r for r, _ in runs), 4
            )
            print(f"{label}: {[round(p, 3) for _, p in runs]}", flush=True)
        out["local_isolation"] = str(probe().isolation)
        out["sandbox_start_cost_s"] = round(
            out["local_submit_to_running_s"] - out["local_bare_submit_to_running_s"], 4
        )
        if not args.no_ray:
            with (
                ray_cluster(args.node_cpus) as address,
                server(root / "ray", "ray", address) as client,
            ):
                runs = [
                    launch(client, root / "ray", f"r{i}", 2, "h200", 8)
                    for i in range(args.ray_runs)
                ]
            out["ray_gang2_submit_to_running_s"] = round(statistics.median(p for _, p in runs), 4)
            out["ray_gang2_submit_to_task_rows_running_s"] = round(
                statistics.median(r for r, _ in runs), 4
            )
            print(f"ray gang of 2: {[round(p, 3) for _, p in runs]}", flush=True)
    out["local_runs"], out["ray_runs"] = args.local_runs, 0 if args.no_ray else args.ray_runs
    out["ray_node_cpus"] = args.node_cpus
    print(json.dumps(out))


if __name__ == "__main__":
    main()
