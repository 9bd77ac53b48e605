"""The same job lifecycle on the local executor and on a Ray cluster: what a workload sees must
not depend on which executor started it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .raykit import Target, job_state, wait_until

PY = sys.executable


def job(name: str, code: str, target: Target, **extra: object) -> dict[str, object]:
    return {
        "kind": "Job",
        "name": name,
        "command": [PY, "-c", code],
        "flavor": target.flavor,
        "chips_per_node": target.chips_per_node,
        **extra,
    }


def written(executor: Target, job_id: str) -> Path:
    """Where a task's files are: its checkpoint folder, the only one it may write (it may run
    in a sandbox), shared with this test as with the control plane's operator."""
    return Path(executor.cloud.settings.checkpoints_dir) / job_id


def test_job_succeeds_with_its_environment_and_logs(executor: Target) -> None:
    code = (
        "import os, json; json.dump(dict(os.environ), "
        "open(os.environ['RAINIER_CHECKPOINT_DIR'] + '/env.json', 'w')); print('done')"
    )
    submitted = executor.tenant.post(
        "/api/v1/jobs", job("env", code, executor, env={"MY_VAR": "x"})
    )
    done = wait_until(job_state(executor.tenant, submitted["id"], "succeeded", "failed"))
    assert (done["state"], done["exit_code"]) == ("succeeded", 0)
    env = json.loads((written(executor, submitted["id"]) / "env.json").read_text())
    assert env["MY_VAR"] == "x"
    assert env["RAINIER_JOB_ID"] == submitted["id"]
    assert (env["RANK"], env["WORLD_SIZE"], env["RAINIER_FLAVOR"]) == ("0", "1", executor.flavor)
    assert env["RAINIER_NODE"] == done["tasks"][0]["node"]
    assert env["RAINIER_TOKEN"].startswith("rj_")
    if executor.cloud.executor == "ray":
        assert not [k for k in env if k.startswith("RAY_")], "Ray's variables reached the task"
    logs = executor.tenant.get(f"/api/v1/jobs/{submitted['id']}/logs")
    assert logs["data"] == "done\n" and logs["done"] is True


def test_gang_gets_one_master_and_distinct_nodes(executor: Target) -> None:
    code = (
        "import os, json, pathlib; "
        "pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'rank-' + os.environ['RANK']).write_text(json.dumps("
        "{k: os.environ[k] for k in ('WORLD_SIZE', 'RAINIER_NODE', 'MASTER_ADDR', 'MASTER_PORT')}))"
    )
    submitted = executor.tenant.post("/api/v1/jobs", job("gang", code, executor, nodes=2))
    done = wait_until(job_state(executor.tenant, submitted["id"], "succeeded", "failed"))
    assert done["state"] == "succeeded"
    out = written(executor, submitted["id"])
    r0, r1 = (json.loads((out / f"rank-{r}").read_text()) for r in (0, 1))
    assert r0["WORLD_SIZE"] == r1["WORLD_SIZE"] == "2"
    assert r0["RAINIER_NODE"] != r1["RAINIER_NODE"]
    assert [r0["RAINIER_NODE"], r1["RAINIER_NODE"]] == done["placement"]
    assert (r0["MASTER_ADDR"], r0["MASTER_PORT"]) == (r1["MASTER_ADDR"], r1["MASTER_PORT"])
    addresses = {n["name"]: n["address"] for n in executor.cloud.nodes()}
    if executor.cloud.executor == "ray":
        assert r0["MASTER_ADDR"] == addresses[r0["RAINIER_NODE"]]


def test_stop_sends_sigterm_then_kills_after_grace(executor: Target) -> None:
    polite = (
        "import os, signal, sys, time, pathlib; "
        "signal.signal(signal.SIGTERM, lambda *a: (print('checkpointing', flush=True), sys.exit(0))); "
        "pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'ready').touch(); time.sleep(600)"
    )
    a = executor.tenant.post("/api/v1/jobs", job("polite", polite, executor))
    ready = written(executor, a["id"]) / "ready"
    wait_until(ready.exists, what="the task to install its handler")
    executor.tenant.post(f"/api/v1/jobs/{a['id']}/stop")
    done = wait_until(job_state(executor.tenant, a["id"], "stopped"))
    assert "checkpointing" in executor.tenant.get(f"/api/v1/jobs/{a['id']}/logs")["data"]
    assert done["tasks"][0]["exit_code"] == 0

    stubborn = (
        "import os, signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'ready').touch(); time.sleep(600)"
    )
    b = executor.tenant.post(
        "/api/v1/jobs", job("stubborn", stubborn, executor, grace_period_s=0.5)
    )
    wait_until((written(executor, b["id"]) / "ready").exists)
    executor.tenant.post(f"/api/v1/jobs/{b['id']}/stop")
    done = wait_until(job_state(executor.tenant, b["id"], "stopped"))
    assert done["tasks"][0]["exit_code"] is None  # killed: it never exited on its own
