"""`rainier logs` on a 2-rank job: every rank prefixed, --tail, --timestamps, waiting while
pending, and the job's outcome as the exit code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .clikit import rainier
from .conftest import Cloud, job_state, wait_until

PROGRAM = (
    "import os, time; r = os.environ['RANK']; "
    "[print(f'line {i} of rank {r}', flush=True) for i in range(3)]; "
    "time.sleep(float(os.environ.get('HOLD', '0'))); raise SystemExit(3)"
)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_logs_of_a_two_rank_job(cloud: Cloud, tmp_path: Path) -> None:
    url = cloud.server.url
    cloud.nodes(
        {"name": "n1", "flavor": "cpu", "chips": 1}, {"name": "n2", "flavor": "cpu", "chips": 1}
    )
    acme = cloud.tenant("acme")
    env = {"RAINIER_API_KEY": acme.key or ""}
    home = tmp_path / "cli"
    # one node is busy, so the gang waits for it
    blocker = acme.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "blocker",
            "command": [sys.executable, "-c", "import time; time.sleep(120)"],
        },
        idempotent=True,
    )
    wait_until(job_state(acme, blocker["id"], "running"), 60)
    gang = acme.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "gang",
            "nodes": 2,
            "command": [sys.executable, "-c", PROGRAM],
            "env": {"HOLD": "1"},
        },
        idempotent=True,
    )
    # the scheduler has said why the gang waits before anyone follows it
    wait_until(lambda: acme.get(f"/api/v1/jobs/{gang['id']}")["reason"] != "queued", 60)
    follower = subprocess.Popen(
        [sys.executable, "-m", "rainier.cli.main", "logs", "-f", "--rank", "all", "gang"],
        env={**_env(home, url), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    assert follower.stderr is not None
    reader = threading.Thread(target=lambda: said.extend(follower.stderr or []), daemon=True)
    reader.start()
    try:
        # the blocker stops only once the follower has said that the gang waits
        wait_until(lambda: any("is pending" in line for line in said), 60, "the pending note")
        acme.post(f"/api/v1/jobs/{blocker['id']}/stop")
        assert follower.stdout is not None
        stdout = follower.stdout.read()
        follower.wait(timeout=120)
        reader.join(timeout=30)
    finally:
        follower.kill()
    stderr = "".join(said)
    assert follower.returncode == 3, stderr  # the job failed with code 3
    assert "job gang is pending: waiting for" in stderr
    assert "job gang failed: task failed with code 3" in stderr
    lines = stdout.splitlines()
    for rank in (0, 1):
        mine = [line for line in lines if line.startswith(f"[rank {rank}] ")]
        assert mine == [f"[rank {rank}] line {i} of rank {rank}" for i in range(3)]
    assert len(lines) == 6

    out = rainier(url, home, "logs", "gang", "--tail", "1", env=env)
    assert out.returncode == 0  # without -f, only the output
    assert sorted(out.stdout.splitlines()) == [
        "[rank 0] line 2 of rank 0",
        "[rank 1] line 2 of rank 1",
    ]
    out = rainier(url, home, "logs", "gang", "--rank", "1", "--timestamps", env=env)
    stamped = out.stdout.splitlines()
    assert len(stamped) == 3
    assert all(
        re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z line \d of rank 1$", s) for s in stamped
    )
    out = rainier(url, home, "logs", "gang", "-f", "--rank", "0", env=env)
    assert out.returncode == 3 and out.stdout.splitlines()[-1] == "line 2 of rank 0"
    out = rainier(url, home, "logs", "gang", "--rank", "2", env=env)
    assert out.returncode == 2 and "rank must be < 2" in out.stderr


def _env(home: Path, url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAINIER_")}
    return {**base, "RAINIER_HOME": str(home), "RAINIER_URL": url}
