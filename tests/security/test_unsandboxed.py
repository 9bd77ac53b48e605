"""A machine that cannot sandbox (here: no bubblewrap on the server's PATH) still runs a control
plane, and says so; `RAINIER_ISOLATION=required` then starts no task at all."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rainier.cli.client import Client

from ..control.server_process import ServerProcess
from .conftest import finished, logs, wait_until

PY = sys.executable
MARK = "import os, pathlib; pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'ran').touch(); print('ran')"


@pytest.fixture
def no_bwrap() -> Iterator[str]:
    """A PATH with the tools a server needs and no `bwrap`."""
    folder = Path(tempfile.mkdtemp(prefix="rainier-path-"))
    for tool in ("setpriv", "env", "sh"):
        found = shutil.which(tool)
        assert found is not None
        (folder / tool).symlink_to(found)
    yield str(folder)
    shutil.rmtree(folder, ignore_errors=True)


def submit(url: str, op: Client) -> tuple[Client, str]:
    tenants = {t["name"] for t in op.get("/api/v1/tenants")["items"]}
    if "acme" not in tenants:
        op.post("/api/v1/tenants", {"kind": "Tenant", "name": "acme"})
    acme = Client(url, op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"])
    job = acme.post("/api/v1/jobs", {"kind": "Job", "name": "mark", "command": [PY, "-c", MARK]})
    return acme, str(job["id"])


def test_without_a_sandbox_the_server_says_so_and_required_refuses_tasks(
    tmp_path: Path, no_bwrap: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db = f"sqlite:///{home / 'rainier.db'}"
    required = ServerProcess(home, db, {"PATH": no_bwrap, "RAINIER_ISOLATION": "required"})
    required.start()
    try:
        op = Client(required.url, httpx.post(f"{required.url}/api/v1/init").json()["key"])
        op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 1})
        assert [n["isolation"] for n in op.get("/api/v1/nodes")["items"]] == ["none"]
        acme, job = submit(required.url, op)
        done = wait_until(finished(acme, job), 60, "the refused job")
        assert done["state"] == "failed"
        assert "RAINIER_ISOLATION=required" in done["reason"], done["reason"]
        assert "bubblewrap" in done["reason"]
        assert not (home / "checkpoints" / job / "ran").exists()
    finally:
        required.stop()
    said = (tmp_path / "server.log").read_text()
    assert "tasks will NOT start: RAINIER_ISOLATION=required but bubblewrap" in said

    auto = ServerProcess(home, db, {"PATH": no_bwrap})
    auto.start()
    try:
        acme, job = submit(auto.url, op := Client(auto.url, op.key))
        done = wait_until(finished(acme, job), 60, "the bare job")
        assert done["state"] == "succeeded" and "ran" in logs(acme, job)
        assert [n["isolation"] for n in op.get("/api/v1/nodes")["items"]] == ["none"]
    finally:
        auto.stop()
    said = (tmp_path / "server.log").read_text()
    assert "tasks are NOT isolated: bubblewrap (bwrap) is not installed" in said
