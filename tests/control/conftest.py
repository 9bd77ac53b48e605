"""Fixtures for the control plane: a real database (SQLite, and PostgreSQL when
RAINIER_TEST_DATABASE_URL names a server) and a real HTTP server in this process."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client
from rainier.config import Settings

PG_URL = os.environ.get("RAINIER_TEST_DATABASE_URL")


def _fresh_postgres() -> tuple[str, Callable[[], None]]:
    assert PG_URL is not None
    name = f"rainier_t{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()

    return PG_URL.rsplit("/", 1)[0] + f"/{name}", drop


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(PG_URL is None, reason="RAINIER_TEST_DATABASE_URL not set"),
            ],
        ),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rainier.db'}"
        return
    url, drop = _fresh_postgres()
    yield url
    drop()


@dataclass
class Cloud:
    server: EmbeddedServer
    op: Client

    @property
    def settings(self) -> Settings:
        return self.server.settings

    def tenant(self, name: str, role: str = "admin") -> Client:
        """A tenant (created if needed) and a fresh key of `role` for it."""
        tenants = {t["name"] for t in self.op.get("/api/v1/tenants")["items"]}
        if name not in tenants:
            self.op.post("/api/v1/tenants", {"kind": "Tenant", "name": name})
        key = self.op.post("/api/v1/keys", {"tenant": name, "role": role})["key"]
        return Client(self.server.url, key)

    def nodes(self, *specs: dict[str, Any]) -> None:
        for spec in specs:
            self.op.post("/api/v1/nodes", {"kind": "Node", **spec})


@pytest.fixture
def cloud(database_url: str, tmp_path: Path) -> Iterator[Cloud]:
    settings = Settings.from_env(
        home=tmp_path / "home", database_url=database_url, port=0, tick_s=0.05
    )
    with EmbeddedServer(settings) as server:
        op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
        yield Cloud(server, op)


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    """Polls `predicate` until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.05)


def job_state(client: Client, job_id: str, *states: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}")
        return job if job["state"] in states else None

    return check
