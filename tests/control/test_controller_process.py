"""`rainier server` with RAINIER_CONTROLLER=external runs no reconciler: a job waits until a
`rainier controller` process on the same home and database runs it, and a stop reaches it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rainier.cli.client import Client

from .conftest import job_state, wait_until
from .server_process import ServerProcess

PY = sys.executable


def test_external_controller_runs_and_stops_jobs(tmp_path: Path, database_url: str) -> None:
    server = ServerProcess(tmp_path / "home", database_url, {"RAINIER_CONTROLLER": "external"})
    server.start()
    controller: subprocess.Popen[bytes] | None = None
    log = open(tmp_path / "controller.log", "ab")  # noqa: SIM115
    try:
        op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
        op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 4})
        op.post("/api/v1/tenants", {"kind": "Tenant", "name": "acme"})
        key = op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"]
        tenant = Client(server.url, key)
        done = tenant.post("/api/v1/jobs", {"kind": "Job", "name": "quick", "command": ["true"]})
        waiting = tenant.get(f"/api/v1/jobs/{done['id']}")
        assert (waiting["state"], waiting["reason"], waiting["events"]) == ("pending", "queued", [])

        controller = subprocess.Popen(
            [PY, "-m", "rainier.cli.main", "controller"],
            env=server.env,
            stdout=log,
            stderr=log,
        )
        finished = wait_until(job_state(tenant, done["id"], "succeeded", "failed"), 60, "the job")
        assert finished["state"] == "succeeded"
        assert [e["kind"] for e in finished["events"]][:1] == ["admitted"]

        code = "import time; time.sleep(600)"
        long = tenant.post(
            "/api/v1/jobs", {"kind": "Job", "name": "long", "command": [PY, "-c", code]}
        )
        wait_until(job_state(tenant, long["id"], "running"), 60, "the long job to run")
        assert tenant.post(f"/api/v1/jobs/{long['id']}/stop")["stop_cause"] == "requested"
        stopped = wait_until(job_state(tenant, long["id"], "stopped"), 60, "the stop")
        assert stopped["reason"] == "stopped on request"
    finally:
        if controller is not None:
            controller.terminate()
            assert controller.wait(30) == 0
        log.close()
        server.stop()
