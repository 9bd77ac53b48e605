"""What the escape tests share with the Ray executor's: alpha's job holding secrets, and beta's
job running `probe.py` against it."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import rainier
from rainier.cli.client import Client
from rainier.config import Settings

from .conftest import PY, SECRET_NAME, finished, logs, wait_until


class AnyCloud(Protocol):
    op: Client

    @property
    def settings(self) -> Settings: ...

    def tenant(self, name: str) -> Client: ...


ALPHA = """
import os, pathlib, sys, time
ckpt = pathlib.Path(os.environ["RAINIER_CHECKPOINT_DIR"])
(ckpt / "weights").write_text("alpha-private-weights")
(ckpt / "export").mkdir(exist_ok=True)
(ckpt / "export" / "config.json").write_text("alpha-private-model")
pathlib.Path("/tmp/alpha-scratch").write_text("alpha-private-tmp")
pathlib.Path("/dev/shm/alpha-shm").write_text("alpha-private-shm")
print("alpha-secret-log", sys.argv[1], "cores", sorted(os.sched_getaffinity(0)), flush=True)
while True:
    time.sleep(0.1)
"""


@dataclass
class Probed:
    results: dict[str, str]
    own: dict[str, Any]
    alpha_job: str
    alpha_cores: list[int]
    alpha_pids: list[int]
    home: Path


def run_probe(
    cloud: AnyCloud,
    url: str,
    secret: str,
    skip: tuple[str, ...] = (),
    job: dict[str, Any] | None = None,
) -> Probed:
    """Alpha runs a job holding secrets; beta's job then tries every escape against it.
    `job`: fields both jobs share (flavor, chips) beyond the command."""
    alpha, beta = cloud.tenant("alpha"), cloud.tenant("beta")
    marker = f"alpha-marker-{secrets.token_hex(4)}"
    a = alpha.post(
        "/api/v1/jobs",
        {"kind": "Job", "name": "weights", "command": [PY, "-c", ALPHA, marker], **(job or {})},
    )
    wait_until(lambda: "alpha-secret-log" in logs(alpha, a["id"]), what="alpha's job")
    alpha_cores = json.loads(logs(alpha, a["id"]).split("cores ")[1].splitlines()[0])
    home = Path(cloud.settings.home)
    alpha_task = home / "tasks" / f"{a['id']}.a0.r0"
    alpha_pids = _pids_of(marker)
    (home / "credentials.json").write_text('{"key": "rk_operator-secret"}')
    targets = {
        "home": str(home),
        "database": str(home / "rainier.db"),
        "credentials": str(home / "credentials.json"),
        "server_secret_name": SECRET_NAME,
        "server_secret_value": secret,
        "server_pid": os.getpid(),
        "other_checkpoint": str(home / "checkpoints" / a["id"] / "weights"),
        "other_model": str(home / "checkpoints" / a["id"] / "export"),
        "other_log": str(home / "logs" / a["id"] / "rank-0.log"),
        "other_task_dir": str(alpha_task),
        "other_marker": marker,
        "other_pid": max(alpha_pids),
        "other_job": a["id"],
        # the job's own id is only known once submitted: the shell puts it in for OWN
        "own_task_dir": str(home / "tasks" / "OWN"),
        "runtime": str(Path(rainier.__file__).resolve().parent),
        "control_url": url,
        "all_cores": sorted(os.sched_getaffinity(0)),
        "skip": list(skip),
    }
    fill_in = 'exec "$0" -c "$1" "$(echo "$2" | sed "s/OWN/$RAINIER_JOB_ID.a0.r0/")"'
    probe_source = (Path(__file__).parent / "probe.py").read_text()
    command = ["/bin/sh", "-c", fill_in, PY, probe_source, json.dumps(targets)]
    b = beta.post(
        "/api/v1/jobs", {"kind": "Job", "name": "escape", "command": command, **(job or {})}
    )
    done = wait_until(finished(beta, b["id"]), 120, "the hostile job")
    out = logs(beta, b["id"])
    assert done["state"] == "succeeded", out
    own = json.loads(out.split("OWN ")[1].splitlines()[0])
    own["job"] = b["id"]
    results = json.loads(out.split("PROBE ")[1].splitlines()[0])
    return Probed(results, own, a["id"], alpha_cores, alpha_pids, home)


def _pids_of(marker: str) -> list[int]:
    """The processes whose command line holds `marker` as a whole argument: alpha's job."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
