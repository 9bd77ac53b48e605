"""A tenant's job tries every way out of its sandbox it can; every one fails, and the other
tenant's job, the control plane and the records billing trusts are untouched."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rainier

from .conftest import PY, SECRET_NAME, Sealed, finished, logs, needs_sandbox, wait_until

pytestmark = needs_sandbox

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


def run_probe(cloud: Sealed, skip: tuple[str, ...] = ()) -> Probed:
    """Alpha runs a job holding secrets; beta's job then tries every escape against it."""
    cloud.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    alpha, beta = cloud.tenant("alpha"), cloud.tenant("beta")
    marker = f"alpha-marker-{secrets.token_hex(4)}"
    a = alpha.post(
        "/api/v1/jobs", {"kind": "Job", "name": "weights", "command": [PY, "-c", ALPHA, marker]}
    )
    wait_until(lambda: "alpha-secret-log" in logs(alpha, a["id"]), what="alpha's job")
    alpha_cores = json.loads(logs(alpha, a["id"]).split("cores ")[1].splitlines()[0])
    home = Path(cloud.settings.home)
    alpha_task = home / "tasks" / f"{a['id']}.a0.r0"
    alpha_pids = _descendants(int((alpha_task / "pid").read_text()))
    (home / "credentials.json").write_text('{"key": "rk_operator-secret"}')
    targets = {
        "home": str(home),
        "database": str(home / "rainier.db"),
        "credentials": str(home / "credentials.json"),
        "server_secret_name": SECRET_NAME,
        "server_secret_value": cloud.secret,
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
        "control_url": cloud.server.url,
        "all_cores": sorted(os.sched_getaffinity(0)),
        "skip": list(skip),
    }
    fill_in = 'exec "$0" -c "$1" "$(echo "$2" | sed "s/OWN/$RAINIER_JOB_ID.a0.r0/")"'
    probe_source = (Path(__file__).parent / "probe.py").read_text()
    command = ["/bin/sh", "-c", fill_in, PY, probe_source, json.dumps(targets)]
    b = beta.post("/api/v1/jobs", {"kind": "Job", "name": "escape", "command": command})
    done = wait_until(finished(beta, b["id"]), 120, "the hostile job")
    out = logs(beta, b["id"])
    assert done["state"] == "succeeded", out
    own = json.loads(out.split("OWN ")[1].splitlines()[0])
    own["job"] = b["id"]
    results = json.loads(out.split("PROBE ")[1].splitlines()[0])
    return Probed(results, own, a["id"], alpha_cores, alpha_pids, home)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        with contextlib.suppress(OSError):
            todo += [int(c) for c in children.read_text().split()]
    return found


def test_a_hostile_job_escapes_nothing(sealed: Sealed) -> None:
    alpha = sealed.tenant("alpha")
    before_weights = None
    probed = run_probe(sealed)
    results, home, a = probed.results, probed.home, probed.alpha_job

    escaped = {k: v for k, v in results.items() if not v.startswith("blocked")}
    assert escaped == {}, escaped
    assert len(results) >= 15
    # each attempt was refused by the system, not lost to a slip of the probe itself
    assert not any(
        v.split(":")[1].strip() in ("KeyError", "NameError", "TypeError") for v in results.values()
    )
    # the probe ran as beta's own unprivileged user, on cores alpha does not hold
    assert probed.own["uid"] >= 1000
    assert not set(probed.own["cores"]) & set(probed.alpha_cores), (probed.own, probed.alpha_cores)
    # and nothing of alpha's, nor of the control plane, was touched
    assert alpha.get(f"/api/v1/jobs/{a}")["state"] == "running"
    assert all(Path(f"/proc/{pid}").exists() for pid in probed.alpha_pids)
    assert (home / "checkpoints" / a / "weights").read_text() == "alpha-private-weights"
    assert before_weights is None and not (home / "checkpoints" / "planted").exists()
    assert not (home / "rainier-escape").exists()
    assert alpha.get(f"/api/v1/jobs/{a}/metrics") == []
    beta = sealed.tenant("beta")
    task = beta.get(f"/api/v1/jobs/{probed.own['job']}")["tasks"][0]
    assert task["exit_code"] == 0 and task["state"] == "exited"
    assert (home / "checkpoints" / probed.own["job"] / "own-state").read_text() == "mine"

    alpha.post(f"/api/v1/jobs/{a}/stop")
    wait_until(finished(alpha, a), 60, "alpha's job to stop")


def test_without_the_sandbox_the_same_probe_escapes(bare: Sealed) -> None:
    """The probe finds what is there to find: run bare, its attempts succeed."""
    probed = run_probe(bare, skip=("signal the control plane",))
    escaped = {k for k, v in probed.results.items() if v.startswith("escaped")}
    assert {
        "read the database",
        "read the server's environment through /proc",
        "read another tenant's checkpoint",
        "read another tenant's task records",
        "read the operator's credentials",
        "forge its own exit record",
        "list another tenant's processes",
        "signal another tenant's process",
    } <= escaped, probed.results


def test_a_job_that_exceeds_its_memory_ends_out_of_memory(sealed: Sealed) -> None:
    sealed.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    beta = sealed.tenant("beta")
    hog = "x = bytearray(1 << 30); x[::4096] = b'1' * len(x[::4096]); print('not limited')"
    job = beta.post(
        "/api/v1/jobs",
        {"kind": "Job", "name": "hog", "command": [PY, "-c", hog], "memory_gb": 0.25},
    )
    done = wait_until(finished(beta, job["id"]), 60, "the memory hog")
    assert done["state"] == "failed"
    assert done["reason"].startswith("out of memory (limit 256 MiB)"), done["reason"]
    assert "not limited" not in logs(beta, job["id"])
    assert any("out of memory" in e["message"] for e in done["events"])


def test_a_tenant_cannot_be_given_another_tenants_files_as_its_data(sealed: Sealed) -> None:
    """Naming a path in a job's `data` binds it only where the tenant's user may read it."""
    sealed.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    alpha, beta = sealed.tenant("alpha"), sealed.tenant("beta")
    write = "import os, pathlib; pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'w').write_text('alpha-only')"
    a = alpha.post("/api/v1/jobs", {"kind": "Job", "name": "w", "command": [PY, "-c", write]})
    assert wait_until(finished(alpha, a["id"]), 60)["state"] == "succeeded"
    home = Path(sealed.settings.home)
    stolen = str(home / "checkpoints" / a["id"])
    b = beta.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "r",
            "train": {"data": [stolen], "steps": 1, "batch_size": 1, "seq_len": 8},
        },
    )
    assert wait_until(finished(beta, b["id"]), 120)["state"] == "failed"
    assert "alpha-only" not in logs(beta, b["id"])
