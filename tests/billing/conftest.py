"""Fixtures for billing: a real database (SQLite, and PostgreSQL when RAINIER_TEST_DATABASE_URL
names a server), a real HTTP server in this process with metering slicing fast, and a tiny
webhook receiver."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client
from rainier.config import Settings

PG_URL = os.environ.get("RAINIER_TEST_DATABASE_URL")
FAST_METERING = {
    "RAINIER_METERING_SLICE_S": "0.2",
    "RAINIER_METERING_SETTLE_DELAY_S": "0",
    "RAINIER_WEBHOOK_RETRY_BASE_S": "0.2",
}


def fresh_postgres() -> tuple[str, Callable[[], None]]:
    assert PG_URL is not None
    name = f"rainier_b{uuid.uuid4().hex[:10]}"
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
    url, drop = fresh_postgres()
    yield url
    drop()


@dataclass
class Cloud:
    server: EmbeddedServer
    op: Client

    @property
    def url(self) -> str:
        return self.server.url

    def tenant(self, name: str, role: str = "admin") -> Client:
        tenants = {t["name"] for t in self.op.get("/api/v1/tenants")["items"]}
        if name not in tenants:
            self.op.post("/api/v1/tenants", {"kind": "Tenant", "name": name})
        key = self.op.post("/api/v1/keys", {"tenant": name, "role": role})["key"]
        return Client(self.server.url, key)

    def contract(self, name: str, tenant: str, **spec: Any) -> dict[str, Any]:
        if tenant not in {t["name"] for t in self.op.get("/api/v1/tenants")["items"]}:
            self.op.post("/api/v1/tenants", {"kind": "Tenant", "name": tenant})
        now = datetime.now(UTC)
        body = {
            "kind": "Contract",
            "name": name,
            "tenant": tenant,
            "term": {
                "start": (now - timedelta(days=1)).isoformat(),
                "end": (now + timedelta(days=365)).isoformat(),
            },
            "committed_usd": "1000.00",
            "backdate": True,
            **spec,
        }
        out: dict[str, Any] = self.op.post("/api/v1/contracts", body)
        return out


@pytest.fixture
def cloud(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    for name, value in FAST_METERING.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(
        home=tmp_path / "home", database_url=database_url, port=0, tick_s=0.05
    )
    with EmbeddedServer(settings) as server:
        op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
        op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 16})
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


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    """An HTTP endpoint that records what is POSTed; the first `fail_first` posts get a 500."""

    url: str
    received: list[Received] = field(default_factory=list)
    fail_first: int = 0
    failed: int = 0

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                if state.failed < state.fail_first:
                    state.failed += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                state.received.append(
                    Received(body, {k.lower(): v for k, v in self.headers.items()})
                )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
