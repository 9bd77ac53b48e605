"""Jobs through the API on the local executor: real processes, real signals."""

from __future__ import annotations

import json
import os
import sys

import httpx
import pytest

from rainier.cli.client import Client, UsageError

from .conftest import Cloud, job_state, wait_until

PY = sys.executable


def job(name: str, code: str, **extra: object) -> dict[str, object]:
    return {"kind": "Job", "name": name, "command": [PY, "-c", code], **extra}


@pytest.fixture
def tenant(cloud: Cloud) -> Client:
    cloud.nodes(
        {"name": "n1", "flavor": "cpu", "chips": 2, "labels": {"block": "b1"}},
        {"name": "n2", "flavor": "cpu", "chips": 2, "labels": {"block": "b1"}},
    )
    return cloud.tenant("acme")


# A task writes only its own folders (it may run in a sandbox): the tests read what it wrote
# from its checkpoint folder, as the control plane's operator can.
def test_job_runs_with_its_environment_and_logs(cloud: Cloud, tenant: Client) -> None:
    code = (
        "import os, json; json.dump(dict(os.environ), "
        "open(os.environ['RAINIER_CHECKPOINT_DIR'] + '/env.json', 'w')); print('done')"
    )
    submitted = tenant.post("/api/v1/jobs", job("env", code, env={"MY_VAR": "x"}))
    assert submitted["state"] == "pending"
    done = wait_until(job_state(tenant, submitted["id"], "succeeded", "failed"))
    assert done["state"] == "succeeded" and done["exit_code"] == 0
    env = json.loads((cloud.settings.checkpoints_dir / submitted["id"] / "env.json").read_text())
    assert not {"HOME", "PATH"} - set(env) and env["HOME"] != os.environ.get("HOME")
    assert env["MY_VAR"] == "x"
    assert env["RAINIER_JOB_ID"] == submitted["id"]
    assert env["RAINIER_TENANT"] == "acme"
    assert (env["RANK"], env["WORLD_SIZE"], env["RAINIER_FLAVOR"]) == ("0", "1", "cpu")
    assert env["RAINIER_TOKEN"].startswith("rj_") and env["RAINIER_CONTROL_URL"].startswith(
        "http://"
    )
    assert env["RAINIER_CHECKPOINT_DIR"].endswith(submitted["id"])
    logs = tenant.get(f"/api/v1/jobs/{submitted['id']}/logs")
    assert logs["data"] == "done\n" and logs["done"] is True


def test_gang_starts_together_on_distinct_nodes(cloud: Cloud, tenant: Client) -> None:
    code = (
        "import os, pathlib; "
        "pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'rank-' + os.environ['RANK']).write_text("
        "os.environ['WORLD_SIZE'] + ' ' + os.environ['RAINIER_NODE'] + ' ' + os.environ['MASTER_PORT'])"
    )
    submitted = tenant.post("/api/v1/jobs", job("gang", code, nodes=2, chips_per_node=2))
    done = wait_until(job_state(tenant, submitted["id"], "succeeded", "failed"))
    assert done["state"] == "succeeded"
    out = cloud.settings.checkpoints_dir / submitted["id"]
    r0 = (out / "rank-0").read_text().split()
    r1 = (out / "rank-1").read_text().split()
    assert r0[0] == r1[0] == "2"
    assert {r0[1], r1[1]} == {"n1", "n2"}
    assert r0[2] == r1[2]


def test_gang_that_does_not_fit_waits_whole(tenant: Client) -> None:
    busy = tenant.post(
        "/api/v1/jobs", job("busy", "import time; time.sleep(600)", chips_per_node=2)
    )
    wait_until(job_state(tenant, busy["id"], "running"))
    submitted = tenant.post("/api/v1/jobs", job("big", "pass", nodes=2, chips_per_node=2))
    detail = wait_until(
        lambda: (d := tenant.get(f"/api/v1/jobs/{submitted['id']}"))["reason"] != "queued" and d
    )
    assert detail["state"] == "pending"
    assert detail["tasks"] == []
    assert "4" in detail["reason"] and "cpu" in detail["reason"]
    tenant.post(f"/api/v1/jobs/{busy['id']}/stop")
    wait_until(job_state(tenant, submitted["id"], "succeeded"))


def test_gang_that_can_never_fit_is_refused(tenant: Client) -> None:
    with pytest.raises(UsageError, match=r"refused: can never fit: .* 3 cpu chips"):
        tenant.post("/api/v1/jobs", job("big", "pass", nodes=3, chips_per_node=1))
    assert tenant.get("/api/v1/jobs")["items"] == []
    # a flavor with no node yet may still get some: its jobs wait
    waiting = tenant.post("/api/v1/jobs", job("later", "pass", flavor="h200", chips_per_node=8))
    assert waiting["state"] == "pending"


def test_failure_is_restarted_up_to_max_restarts(tenant: Client) -> None:
    submitted = tenant.post("/api/v1/jobs", job("flaky", "raise SystemExit(3)", max_restarts=2))
    done = wait_until(job_state(tenant, submitted["id"], "failed"))
    assert done["exit_code"] == 3
    assert done["restarts"] == 2 and done["attempt"] == 2
    assert [t["attempt"] for t in done["tasks"]] == [0, 1, 2]


def test_stop_sends_sigterm_then_kills_after_grace(cloud: Cloud, tenant: Client) -> None:
    polite = (
        "import os, signal, sys, time, pathlib; "
        "signal.signal(signal.SIGTERM, lambda *a: (print('checkpointing', flush=True), sys.exit(0))); "
        "pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'ready').touch(); time.sleep(600)"
    )
    a = tenant.post("/api/v1/jobs", job("polite", polite))
    ready = cloud.settings.checkpoints_dir / a["id"] / "ready"
    wait_until(ready.exists, what="the task to install its handler")
    tenant.post(f"/api/v1/jobs/{a['id']}/stop")
    done = wait_until(job_state(tenant, a["id"], "stopped"))
    assert "checkpointing" in tenant.get(f"/api/v1/jobs/{a['id']}/logs")["data"]
    assert done["tasks"][0]["exit_code"] == 0

    stubborn = (
        "import os, signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'ready').touch(); time.sleep(600)"
    )
    b = tenant.post("/api/v1/jobs", job("stubborn", stubborn, grace_period_s=0.5))
    wait_until((cloud.settings.checkpoints_dir / b["id"] / "ready").exists)
    tenant.post(f"/api/v1/jobs/{b['id']}/stop")
    done = wait_until(job_state(tenant, b["id"], "stopped"))
    assert done["tasks"][0]["exit_code"] is None  # killed: no exit code was ever written


def test_idempotent_submission(cloud: Cloud, tenant: Client) -> None:
    spec = job("once", "pass")
    headers = {"Idempotency-Key": "abc-123"}
    first = tenant.http.post("/api/v1/jobs", json=spec, headers=headers)
    again = tenant.http.post("/api/v1/jobs", json=spec, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert len(tenant.get("/api/v1/jobs", name="once")["items"]) == 1


def test_bad_document_is_refused_with_the_field(tenant: Client) -> None:
    response = tenant.http.post(
        "/api/v1/jobs", json={"kind": "Job", "name": "x", "command": ["a"], "nodes": 0}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["problems"][0]["field"] == "nodes"
    assert "greater than or equal to 1" in body["message"]
    assert tenant.get("/api/v1/jobs")["items"] == []


def test_pagination_walks_every_job_once(tenant: Client) -> None:
    # a flavor without nodes: the jobs stay pending
    ids = {tenant.post("/api/v1/jobs", job(f"p{i}", "pass", flavor="h200"))["id"] for i in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        page = tenant.get("/api/v1/jobs", limit=3, cursor=cursor)
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    assert seen == sorted(seen, reverse=True)


def test_health_and_metrics(cloud: Cloud, tenant: Client) -> None:
    assert httpx.get(f"{cloud.server.url}/healthz").json() == {"status": "ok"}
    tenant.post("/api/v1/jobs", job("m", "pass", flavor="h200"))  # no h200 node: it stays pending
    text = httpx.get(f"{cloud.server.url}/metrics").text
    assert 'rainier_jobs{state="pending"} 1.0' in text
    schema = httpx.get(f"{cloud.server.url}/openapi.json").json()
    assert "JobSpec" in schema["components"]["schemas"]
    assert "ContractSpec" in schema["components"]["schemas"]
