"""A real control plane in this process, a tiny random Llama, and one deployment of it that
the tests of this package share (a replica takes seconds to start; the tests take turns)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client
from rainier.config import Settings
from rainier.serve.tiny_model import build_tiny_llama

READY_S = 120.0
ENV = {"RAINIER_SCALE_DOWN_AFTER_S": "2", "RAINIER_GATEWAY_WAIT_S": str(READY_S)}


def wait_until(predicate: Callable[[], Any], timeout_s: float = 60.0, what: str = "") -> Any:
    """Polls `predicate` until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.1)


def written(cloud: Cloud) -> None:
    """Waits until the gateway has written every request it metered (it writes after the
    answer, so a test reading the ledger right after an answer could be early)."""
    gateway = cloud.server.app.state.gateway
    wait_until(lambda: gateway.pending_records == 0, 30, "the metered usage to be written")


@dataclass
class Cloud:
    server: EmbeddedServer
    op: Client

    @property
    def url(self) -> str:
        return self.server.url

    def tenant(self, name: str, role: str = "admin") -> Client:
        """A tenant (created if needed) and a fresh key of `role` for it."""
        tenants = {t["name"] for t in self.op.get("/api/v1/tenants")["items"]}
        if name not in tenants:
            self.op.post("/api/v1/tenants", {"kind": "Tenant", "name": name})
        key = self.op.post("/api/v1/keys", {"tenant": name, "role": role})["key"]
        return Client(self.server.url, key)

    def openai(self, client: Client, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=client.key, **options)


@pytest.fixture(scope="package")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    home = tmp_path_factory.mktemp("home")
    previous = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    settings = Settings.from_env(
        home=home, database_url=f"sqlite:///{home / 'rainier.db'}", port=0, tick_s=0.05
    )
    try:
        with EmbeddedServer(settings) as server:
            op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
            op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 4})
            yield Cloud(server, op)
            for dep in op.get("/api/v1/deployments")["items"]:
                op.delete(f"/api/v1/deployments/{dep['id']}")
            wait_until(
                lambda: (
                    not op.get("/api/v1/jobs", state=["pending", "running", "stopping"])["items"]
                ),
                what="every replica to stop",
            )
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="package")
def model_dir(cloud: Cloud) -> Path:
    """A tiny random Llama under acme's storage prefix: a folder acme owns and may register."""
    return build_tiny_llama(cloud.server.settings.storage_dir / "acme" / "models" / "tiny-llama")


@pytest.fixture(scope="package")
def acme(cloud: Cloud) -> Client:
    return cloud.tenant("acme")


@pytest.fixture(scope="package")
def globex(cloud: Cloud) -> Client:
    return cloud.tenant("globex")


def ready_replicas(client: Client, name: str, count: int = 1) -> Callable[[], dict[str, Any]]:
    def check() -> dict[str, Any]:
        d: dict[str, Any] = client.get(f"/api/v1/deployments/{name}")
        return d if d["ready_replicas"] >= count else {}

    return check


@pytest.fixture(scope="package")
def chat(cloud: Cloud, acme: Client, model_dir: Path) -> dict[str, Any]:
    """The shared deployment: `tiny` registered in acme, served as `chat`. It starts with no
    replica; the first request wakes it and waits for it, then it keeps 1..2 replicas."""
    acme.post("/api/v1/models", {"name": "tiny", "path": str(model_dir)})
    doc = {
        "kind": "Deployment",
        "name": "chat",
        "model": "tiny",
        "replicas": {"min": 0, "max": 2},
        "target_inflight_per_replica": 2,
    }
    assert acme.post("/api/v1/deployments", doc)["desired_replicas"] == 0
    first = cloud.openai(acme).completions.create(
        model="chat",
        prompt="wake up",
        max_tokens=2,
        temperature=0,  # sampled, the answer to this prompt is empty about one time in 90
    )
    assert first.choices[0].text
    woken = acme.get("/api/v1/deployments/chat")
    assert woken["ready_replicas"] == 1
    assert any(e["message"] == "0 -> 1 replicas (a request arrived)" for e in woken["events"])
    acme.post("/api/v1/deployments", {**doc, "replicas": {"min": 1, "max": 2}})
    found: dict[str, Any] = wait_until(ready_replicas(acme, "chat"), READY_S, "chat to be ready")
    return found
