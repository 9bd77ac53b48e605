"""What a job's tasks tell the control plane over HTTP with their job token: where a replica
serves, where a gang meets (chosen on rank 0's node), and their output, sent in batches."""

from __future__ import annotations

import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client, UsageError
from rainier.config import Settings
from rainier.control import rendezvous
from rainier.control.local import OUTPUT_FILE
from rainier.control.log_store import LogGap, LogSuperseded, TaskLogs
from rainier.control.logship import LogShipper
from rainier.store.keys import JobTokens
from rainier.tasklink import ControlPlane

from .clikit import rainier
from .conftest import Cloud, job_state, wait_until

PY = sys.executable


def pending_gang(acme: Client) -> dict[str, Any]:
    """A 2-rank job no node can take: it stays pending, so its token stays good."""
    name = f"gang-{uuid.uuid4().hex[:6]}"
    job = {"kind": "Job", "name": name, "nodes": 2, "flavor": "h200", "command": [PY, "-V"]}
    submitted: dict[str, Any] = acme.post("/api/v1/jobs", job)
    return submitted


def plane_of(cloud: Cloud, job_id: str) -> ControlPlane:
    token = JobTokens.load(cloud.settings.home).sign(job_id)
    return ControlPlane(cloud.server.url, job_id, token)


def put(
    cloud: Cloud, job_id: str, token: str | None, body: dict[str, Any], purpose: str = "serve"
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{cloud.server.url}/api/v1/jobs/{job_id}/endpoints/{purpose}"
    return httpx.put(url, json=body, headers=headers, timeout=10)


def test_an_endpoint_is_registered_by_its_own_job_token_only(cloud: Cloud) -> None:
    acme = cloud.tenant("acme")
    mine, other = pending_gang(acme), pending_gang(acme)
    plane = plane_of(cloud, mine["id"])

    found = plane.register(4321, rank=1)
    assert (found["host"], found["port"], found["rank"], found["attempt"]) == (
        "127.0.0.1",
        4321,
        1,
        0,
    )
    assert (
        acme.get(f"/api/v1/jobs/{mine['id']}/endpoints/serve", rank=1)["url"]
        == "http://127.0.0.1:4321"
    )
    again = plane.register(4322, rank=1, host="127.0.0.1")
    assert again["url"] == "http://127.0.0.1:4322", "a new registration replaces the last"
    elsewhere = put(cloud, mine["id"], plane.token, {"port": 80, "host": "169.254.169.254"})
    assert elsewhere.status_code == 422 and "host must be the address of rank 0" in elsewhere.text

    others = plane_of(cloud, other["id"]).token
    assert put(cloud, mine["id"], others, {"port": 1}).status_code == 404
    assert put(cloud, mine["id"], acme.key, {"port": 1}).status_code == 403
    assert put(cloud, mine["id"], None, {"port": 1}).status_code == 401
    bad_port = put(cloud, mine["id"], plane.token, {"port": 0})
    assert bad_port.status_code == 422 and "port" in bad_port.text
    bad_host = put(cloud, mine["id"], plane.token, {"port": 80, "host": "a b/c"})
    assert bad_host.status_code == 422 and "host" in bad_host.text
    assert put(cloud, mine["id"], plane.token, {"port": 80}, "bogus").status_code == 422
    no_rank = put(cloud, mine["id"], plane.token, {"port": 80, "rank": 2})
    assert no_rank.status_code == 409 and "rank must be < 2" in no_rank.text
    with pytest.raises(UsageError, match=r"rank 0 of job .* has registered no serve endpoint"):
        acme.get(f"/api/v1/jobs/{other['id']}/endpoints/serve")

    acme.post(f"/api/v1/jobs/{mine['id']}/stop")
    wait_until(job_state(acme, mine["id"], "stopped"))
    assert put(cloud, mine["id"], plane.token, {"port": 80}).status_code == 401, "job ended"


def test_a_gang_meets_at_the_port_rank_0_bound_on_its_node(cloud: Cloud) -> None:
    acme = cloud.tenant("acme")
    gang = pending_gang(acme)
    plane = plane_of(cloud, gang["id"])
    base = {
        "RAINIER_CONTROL_URL": plane.url,
        "RAINIER_JOB_ID": gang["id"],
        "RAINIER_TOKEN": plane.token,
        "RAINIER_ATTEMPT": "0",
        "RAINIER_NODE_ADDRESS": "127.0.0.1",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "192.0.2.1",
        rendezvous.RENDEZVOUS_ENV: rendezvous.BY_CONTROL_PLANE,
    }
    settled: dict[int, dict[str, str]] = {}
    waiter = threading.Thread(
        target=lambda: settled.update({1: rendezvous.settle({**base, "RANK": "1"}, 30)})
    )
    waiter.start()  # rank 1 asks first, and waits for rank 0
    wait_until(lambda: not settled and waiter.is_alive(), 5)
    settled[0] = rendezvous.settle({**base, "RANK": "0"}, 30)
    waiter.join(30)
    first, second = settled[0], settled[1]
    assert (first["MASTER_ADDR"], first["MASTER_PORT"]) == (
        second["MASTER_ADDR"],
        second["MASTER_PORT"],
    )
    assert first["MASTER_ADDR"] == "127.0.0.1"
    with socket.socket() as sock:  # rank 0 may listen there: the port is free on its node
        sock.bind(("", int(first["MASTER_PORT"])))
    alone = rendezvous.settle({**base, "WORLD_SIZE": "1", "RANK": "0"})
    assert alone["MASTER_PORT"].isdigit(), "a gang of one takes a free port of its own node"
    alone_gang = pending_gang(acme)
    token = plane_of(cloud, alone_gang["id"]).token
    waiting = {**base, "RAINIER_JOB_ID": alone_gang["id"], "RAINIER_TOKEN": token, "RANK": "1"}
    with pytest.raises(rendezvous.RendezvousFailed, match="rank 0 registered no"):
        rendezvous.settle(waiting, 1)


def test_output_batches_are_stored_once_in_order_per_attempt(cloud: Cloud, tmp_path: Path) -> None:
    acme = cloud.tenant("acme")
    gang = pending_gang(acme)
    plane = plane_of(cloud, gang["id"])
    output = tmp_path / "node-output.log"
    output.write_bytes(b"")
    shipper = LogShipper(output, plane, rank=1, attempt=0).start()
    with open(output, "ab") as fh:
        for i in range(2000):
            fh.write(f"line {i:04d} {'x' * 200}\n".encode())
            fh.flush()
    assert shipper.finish(30)
    sent = output.read_bytes()
    stored = acme.get(f"/api/v1/jobs/{gang['id']}/logs", rank=1, offset=0)
    assert stored["data"].encode() == sent and len(sent) > 256 * 1024  # more than one batch

    assert plane.send_log(1, 0, 0, sent[:100]) == len(sent), "a batch sent again is stored once"
    assert plane.send_log(1, 0, len(sent) + 5, b"gap") == len(sent), "a gap: resume from there"
    assert plane.send_log(1, 0, len(sent) - 3, sent[-3:] + b"more\n") == len(sent) + 5
    whole = acme.get(f"/api/v1/jobs/{gang['id']}/logs", rank=1, offset=0)["data"]
    assert whole.endswith("x\nmore\n") and len(whole) == len(sent) + 5
    assert acme.get(f"/api/v1/jobs/{gang['id']}/logs", rank=0)["data"] == ""

    with pytest.raises(httpx.HTTPStatusError) as later:
        plane.send_log(1, 1, 0, b"x")  # the job has had one attempt only
    assert later.value.response.status_code == 422 and "attempt" in later.value.response.text
    refused = httpx.post(
        f"{cloud.server.url}/api/v1/jobs/{gang['id']}/logs",
        params={"rank": 0, "attempt": 0, "offset": 0},
        content=b"forged",
        headers={"Authorization": f"Bearer {acme.key}"},
    )
    assert refused.status_code == 403


@pytest.fixture
def sending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedServer]:
    """A control plane whose local nodes send their tasks' output over HTTP, as remote ones."""
    monkeypatch.setenv("RAINIER_SEND_TASK_OUTPUT", "1")
    settings = Settings.from_env(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        port=0,
        tick_s=0.05,
    )
    with EmbeddedServer(settings) as server:
        yield server


def test_logs_follow_every_rank_of_output_sent_over_http(
    sending: EmbeddedServer, tmp_path: Path
) -> None:
    op = Client(sending.url, Client(sending.url).post("/api/v1/init")["key"])
    for name in ("n1", "n2"):
        op.post("/api/v1/nodes", {"kind": "Node", "name": name, "flavor": "cpu", "chips": 1})
    op.post("/api/v1/tenants", {"kind": "Tenant", "name": "acme"})
    key = op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"]
    acme = Client(sending.url, key)
    # Both ranks print all their lines before either fails: the first rank to fail ends the
    # gang, and the other rank's lines after that are rightly never written.
    program = (
        "import os, time; r = os.environ['RANK']; "
        "[(print(f'line {i} of rank {r}', flush=True), time.sleep(0.1)) for i in range(5)]; "
        "time.sleep(2); raise SystemExit(3)"
    )
    gang = acme.post(
        "/api/v1/jobs", {"kind": "Job", "name": "gang", "nodes": 2, "command": [PY, "-c", program]}
    )
    out = rainier(
        sending.url,
        tmp_path / "cli",
        "logs",
        "-f",
        "--rank",
        "all",
        "gang",
        env={"RAINIER_API_KEY": key},
    )
    assert out.returncode == 3, out.stderr
    lines = out.stdout.splitlines()
    for rank in (0, 1):
        assert [x for x in lines if x.startswith(f"[rank {rank}] ")] == [
            f"[rank {rank}] line {i} of rank {rank}" for i in range(5)
        ]
    assert len(lines) == 10
    task_dirs = sorted((sending.settings.tasks_dir).glob(f"{gang['id']}.a0.r*"))
    assert [(d / OUTPUT_FILE).read_text().count("\n") for d in task_dirs] == [5, 5], (
        "sent from the node's file"
    )
    bad = rainier(
        sending.url,
        tmp_path / "cli",
        "logs",
        "--rank",
        "first",
        "gang",
        env={"RAINIER_API_KEY": key},
    )
    assert bad.returncode == 2 and "neither a rank" in bad.stderr


def test_each_attempt_appends_after_the_last_and_resends_are_idempotent(tmp_path: Path) -> None:
    logs = TaskLogs(tmp_path)
    assert logs.append("job-1", 0, 0, 0, b"first ") == 6
    assert logs.append("job-1", 0, 0, 6, b"try\n") == 10
    assert logs.append("job-1", 0, 1, 0, b"second\n") == 7, "offsets count from the attempt's start"
    assert logs.append("job-1", 0, 1, 0, b"second\n") == 7, "a resent batch is stored once"
    with pytest.raises(LogSuperseded):
        logs.append("job-1", 0, 0, 10, b"late\n")  # would land inside attempt 1's output
    with pytest.raises(LogGap) as gap:
        logs.append("job-1", 0, 1, 9, b"x")
    assert gap.value.expected == 7
    assert logs.append("job-1", 0, 1, 7, b"more\n") == 12
    assert logs.path("job-1", 0).read_bytes() == b"first try\nsecond\nmore\n"
    assert logs.append("job-2", 3, 4, 0, b"x") == 1, "an attempt may be a job's first output"
