"""A real `rainier server` process, a tenant set up through the API as the CLI does it, and
Debian's headless Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("RAINIER_ARTIFACTS", ROOT / "tmp" / "artifacts")) / "console"
SERVER_ENV = {
    "RAINIER_METERING_SLICE_S": "0.2",
    "RAINIER_METERING_SETTLE_DELAY_S": "0",
    "RAINIER_SCALE_DOWN_AFTER_S": "600",
    "RAINIER_GATEWAY_WAIT_S": "180",
    "RAINIER_LOG_LEVEL": "WARNING",
    # The pages are under test here, not the sandbox (tests/security): the gated jobs wait on
    # files this test writes beside the server's home, which a sandboxed task cannot see.
    "RAINIER_ISOLATION": "off",
}


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


@dataclass
class Server:
    """`rainier server` in a process of its own, on a free port, with its own home."""

    home: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log_path = self.home.parent / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            **SERVER_ENV,
            "RAINIER_HOME": str(self.home),
            "RAINIER_DATABASE_URL": f"sqlite:///{self.home / 'rainier.db'}",
            "RAINIER_PORT": str(self.port),
        }
        env.pop("RAINIER_CONSOLE_SECRET", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rainier.cli.main", "server"],
                env=env,
                stdout=log,
                stderr=log,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 90, "the server to answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # tasks outlive their server by design (a restarted server adopts them): end this one's
        for pid_file in (self.home / "tasks").glob("*/pid"):
            with contextlib.suppress(ValueError, OSError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


class Api:
    """The REST API with one key: what `rainier` does on the command line."""

    def __init__(self, url: str, key: str):
        self.key = key
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None) -> Any:
        response = self.http.post(path, json=body)
        assert response.status_code < 300, response.text
        return response.json()


@dataclass
class Cloud:
    server: Server
    op: Api
    acme: Api
    globex: Api
    gates: Path

    @property
    def url(self) -> str:
        return self.server.url


def _tenant(op: Api, url: str, name: str, guaranteed: int) -> Api:
    today = datetime.now(UTC).date()
    op.post("/api/v1/tenants", {"kind": "Tenant", "name": name})
    op.post(
        "/api/v1/contracts",
        {
            "kind": "Contract",
            "name": f"{name}-2026",
            "tenant": name,
            "term": {"start": today.isoformat(), "end": (today + timedelta(days=365)).isoformat()},
            "backdate": True,  # since midnight: a few hours of reservations, billed at once
            "committed_usd": 1000,
            "guaranteed_chips": {"cpu": guaranteed},
            "borrow_limit_chips": {"cpu": 4 - guaranteed},
        },
    )
    return Api(url, op.post("/api/v1/keys", {"tenant": name, "role": "admin"})["key"])


@pytest.fixture(scope="package")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    root = tmp_path_factory.mktemp("console")
    server = Server(root / "home")
    server.start()
    try:
        op = Api(server.url, httpx.post(f"{server.url}/api/v1/init").json()["key"])
        op.post(
            "/api/v1/nodes",
            {
                "kind": "Node",
                "name": "cpu-a1",
                "flavor": "cpu",
                "chips": 4,
                "labels": {"zone": "local-a", "block": "b1", "rack": "r1"},
            },
        )
        gates = root / "gates"
        gates.mkdir()
        acme, globex = _tenant(op, server.url, "acme", 2), _tenant(op, server.url, "globex", 1)
        yield Cloud(server, op, acme, globex, gates)
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (scripts/install-chromium.sh installs it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


SHOTS_TAKEN: list[Path] = []


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    SHOTS_TAKEN.append(ARTIFACTS)
    print(f"\nconsole screenshots: {ARTIFACTS}")
    return ARTIFACTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Says where the screenshots went, also when output was captured."""
    for folder in SHOTS_TAKEN:
        terminalreporter.write_line(f"console screenshots: {folder}")


def sign_in(browser: Any, url: str, key: str) -> Any:
    """A fresh browser context (its own cookies) signed in with `key`; returns its page."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(60_000)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    page.goto(f"{url}/")
    assert page.url.startswith(f"{url}/login")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()
    return page
