"""A control plane that sandboxes its tasks for real (bubblewrap, tenant uids, cgroups), with a
secret in the server's own environment that no task may ever see."""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client
from rainier.config import Settings
from rainier.control.sandbox import probe

PY = sys.executable
SECRET_NAME = "RAINIER_TEST_SERVER_SECRET"

needs_sandbox = pytest.mark.skipif(not probe().ok, reason=f"no sandbox here: {probe().reason}")


@dataclass
class Sealed:
    server: EmbeddedServer
    op: Client
    secret: str

    @property
    def settings(self) -> Settings:
        return self.server.settings

    def tenant(self, name: str) -> Client:
        tenants = {t["name"] for t in self.op.get("/api/v1/tenants")["items"]}
        if name not in tenants:
            self.op.post("/api/v1/tenants", {"kind": "Tenant", "name": name})
        key = self.op.post("/api/v1/keys", {"tenant": name, "role": "admin"})["key"]
        return Client(self.server.url, key)

    def nodes(self, *specs: dict[str, Any]) -> None:
        for spec in specs:
            self.op.post("/api/v1/nodes", {"kind": "Node", **spec})


@contextmanager
def control_plane(home: Path, isolation: str) -> Iterator[Sealed]:
    secret = secrets.token_hex(16)
    os.environ[SECRET_NAME] = secret
    settings = Settings.from_env(home=home, port=0, tick_s=0.05, isolation=isolation)
    try:
        with EmbeddedServer(settings) as server:
            op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
            yield Sealed(server, op, secret)
    finally:
        os.environ.pop(SECRET_NAME, None)


@pytest.fixture
def sealed(tmp_path: Path) -> Iterator[Sealed]:
    """Tasks must be sandboxed: a task that cannot be is refused, never run bare."""
    with control_plane(tmp_path / "home", "required") as cloud:
        yield cloud


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Sealed]:
    """The same control plane with the sandbox off: what the probe finds without it."""
    with control_plane(tmp_path / "home", "off") as cloud:
        yield cloud


def wait_until(predicate: Callable[[], Any], timeout_s: float = 60.0, what: str = "") -> Any:
    """Polls `predicate` until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.05)


def finished(client: Client, job_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}")
        return job if job["state"] in ("succeeded", "failed", "stopped") else None

    return check


def logs(client: Client, job_id: str, rank: int = 0) -> str:
    return str(client.get(f"/api/v1/jobs/{job_id}/logs", rank=rank)["data"])
