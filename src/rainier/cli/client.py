"""The CLI's HTTP client: where the server is, which key to send, errors as exit codes."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import click
import httpx


class UsageError(click.ClickException):
    """A mistake of the user's (bad document, unknown object): exit code 2."""

    exit_code = 2


def home() -> Path:
    return Path(os.environ.get("RAINIER_HOME", Path.home() / ".rainier")).expanduser()


def credentials_path() -> Path:
    return home() / "credentials.json"


def save_credentials(url: str, key: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "key": key}))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def load_credentials() -> dict[str, str]:
    try:
        data: dict[str, str] = json.loads(credentials_path().read_text())
        return data
    except (FileNotFoundError, ValueError):
        return {}


def default_url() -> str:
    return (
        os.environ.get("RAINIER_URL")
        or load_credentials().get("url")
        or f"http://127.0.0.1:{os.environ.get('RAINIER_PORT', '8000')}"
    )


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, timeout_s: float = 30.0):
        self.url = (url or default_url()).rstrip("/")
        self.key = key or os.environ.get("RAINIER_API_KEY") or load_credentials().get("key")
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        retries = 5 if method == "GET" or "Idempotency-Key" in kwargs.get("headers", {}) else 0
        for attempt in range(retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
                break
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise click.ClickException(
                        f"cannot reach the control plane at {self.url}: {exc}"
                    ) from None
                time.sleep(0.2 * (attempt + 1))
        if response.status_code >= 400:
            try:
                body = response.json()
                message = body.get("message") or body.get("detail") or response.text
            except ValueError:
                message = response.text
            if response.status_code in (400, 404, 409, 422):
                raise UsageError(str(message))
            raise click.ClickException(f"{response.status_code}: {message}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, *, idempotent: bool = False) -> Any:
        headers = {"Idempotency-Key": uuid.uuid4().hex} if idempotent else {}
        return self.request("POST", path, json=body, headers=headers)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
