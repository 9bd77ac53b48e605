"""A real `rainier server` process that tests can kill -9 and start again on the same home."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import wait_until

PY = sys.executable


class ServerProcess:
    def __init__(self, home: Path, database_url: str, env: dict[str, str] | None = None):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            **(env or {}),
            "RAINIER_HOME": str(home),
            "RAINIER_DATABASE_URL": database_url,
            "RAINIER_PORT": str(self.port),
            "RAINIER_LOG_LEVEL": "WARNING",
        }
        self.log = open(home.parent / "server.log", "ab")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_s: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "rainier.cli.main", "server"], env=self.env, stdout=self.log, stderr=self.log
        )

        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, ready_s, "the server to answer")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
