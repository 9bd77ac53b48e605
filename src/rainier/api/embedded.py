"""A control plane inside this process (a thread), for `rainier demo`, tests and notebooks."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from types import TracebackType

import httpx
import uvicorn

from rainier.api.app import create_app
from rainier.config import Settings


class EmbeddedServer:
    def __init__(self, settings: Settings):
        self.sock = socket.socket()
        self.sock.bind((settings.host, settings.port if settings.port else 0))
        self.settings = replace(settings, port=self.sock.getsockname()[1])
        self.app = create_app(self.settings)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return self.settings.control_url

    def start(self, timeout_s: float = 30.0) -> EmbeddedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.server.started:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            if not self.thread.is_alive():
                break
            time.sleep(0.05)
        raise RuntimeError("the embedded control plane did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
