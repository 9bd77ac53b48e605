"""kill -9 of the server while jobs run and submissions arrive, then a restart."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rainier.cli.client import Client

from .conftest import wait_until
from .server_process import ServerProcess

PY = sys.executable


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "home", database_url)
    proc.start()
    yield proc
    proc.stop()


def marker_job(name: str, run_s: float, **extra: object) -> dict[str, object]:
    """A job that records every start of its process in its checkpoint folder (what a sandboxed
    task may write, kept across its attempts), so a second start is visible."""
    code = (
        "import os, time, pathlib; "
        "p = pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'marks'); "
        "f = open(p, 'a'); f.write(f\"start {os.environ['RAINIER_ATTEMPT']} {os.getpid()}\\n\"); f.close(); "
        f"time.sleep({run_s}); "
        "open(p, 'a').write('end\\n')"
    )
    return {"kind": "Job", "name": name, "command": [PY, "-c", code], **extra}


def marks_of(tmp_path: Path, job: dict[str, object] | str) -> Path:
    job_id = job if isinstance(job, str) else str(job["id"])
    return tmp_path / "home" / "checkpoints" / job_id / "marks"


@pytest.mark.slow
def test_kill9_loses_nothing_and_runs_nothing_twice(server: ServerProcess, tmp_path: Path) -> None:
    op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
    op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 64})
    op.post("/api/v1/tenants", {"kind": "Tenant", "name": "acme"})
    tenant = Client(server.url, op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"])

    long_jobs = [tenant.post("/api/v1/jobs", marker_job(f"long{i}", 6.0)) for i in range(3)]
    victim = tenant.post(
        "/api/v1/jobs", marker_job("victim", 600.0, max_restarts=1, grace_period_s=1)
    )
    wait_until(
        lambda: all(marks_of(tmp_path, j).exists() for j in [*long_jobs, victim]),
        what="every task to start",
    )

    acknowledged: dict[str, str] = {}
    stop_submitting = threading.Event()

    def submit_forever() -> None:
        i = 0
        while not stop_submitting.is_set():
            key, name = uuid.uuid4().hex, f"sub{i}"
            while True:  # retry with the same key until the server acknowledges it
                try:
                    r = tenant.http.post(
                        "/api/v1/jobs",
                        json=marker_job(name, 0.1),
                        headers={"Idempotency-Key": key},
                        timeout=5,
                    )
                    if r.status_code in (200, 201):
                        acknowledged[name] = r.json()["id"]
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            i += 1

    submitter = threading.Thread(target=submit_forever)
    submitter.start()
    wait_until(lambda: len(acknowledged) >= 5, what="some submissions")
    server.kill9()
    # While the control plane is down one task dies without leaving an exit code.
    victim_task = tenant_dir(tmp_path) / f"{victim['id']}.a0.r0"
    os.killpg(int((victim_task / "pid").read_text()), signal.SIGKILL)
    server.start()
    wait_until(lambda: len(acknowledged) >= 15, what="submissions after the restart")
    stop_submitting.set()
    submitter.join()

    for j in long_jobs:
        wait_until(lambda j=j: tenant.get(f"/api/v1/jobs/{j['id']}")["state"] == "succeeded", 60)
    names = {**acknowledged, **{f"long{i}": j["id"] for i, j in enumerate(long_jobs)}}
    for name, job_id in acknowledged.items():
        wait_until(
            lambda job_id=job_id: tenant.get(f"/api/v1/jobs/{job_id}")["state"] == "succeeded",
            60,
            f"{name} to finish",
        )
    everything = []
    cursor = None
    while True:
        page = tenant.get("/api/v1/jobs", limit=500, cursor=cursor)
        everything += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    by_name: dict[str, list[str]] = {}
    for job in everything:
        by_name.setdefault(job["name"], []).append(job["id"])
    for name, job_id in names.items():
        assert by_name.get(name) == [job_id], f"{name} stored {by_name.get(name)}"
        lines = marks_of(tmp_path, job_id).read_text().split("\n")
        starts = [line for line in lines if line.startswith("start")]
        assert len(starts) == 1, f"{name} started {len(starts)} times: {starts}"
    # the victim was marked lost and restarted once, from attempt 1
    victim_now = wait_until(
        lambda: (v := tenant.get(f"/api/v1/jobs/{victim['id']}"))["attempt"] == 1 and v, 30
    )
    assert victim_now["restarts"] == 1
    assert any(t["state"] == "lost" for t in victim_now["tasks"])
    wait_until(
        lambda: marks_of(tmp_path, victim).read_text().count("start 1") == 1,
        what="victim's restart",
    )
    tenant.post(f"/api/v1/jobs/{victim['id']}/stop")
    wait_until(lambda: tenant.get(f"/api/v1/jobs/{victim['id']}")["state"] == "stopped", 30)


def tenant_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "tasks"
