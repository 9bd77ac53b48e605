"""The CLI's HTTP client: where the server is, which key to send, errors as exit codes.

httpx is imported when the first request is made, not when the CLI starts: `rainier --help`
and argument errors answer without it.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rainier.cli.profiles import Credentials, Profile, credentials_path, home, store_profile

if TYPE_CHECKING:
    import httpx

__all__ = ["Client", "UsageError", "credentials_path", "default_url", "home", "save_credentials"]

DEFAULT_PORT = 8000
CONNECT_TIMEOUT_S = 3.0


class UsageError(click.ClickException):
    """A mistake of the user's (bad document, unknown object): exit code 2."""

    exit_code = 2


class Unreachable(click.ClickException):
    """No control plane answers at the URL: said at once, with how to start one."""

    exit_code = 1


def save_credentials(
    url: str, key: str, profile: str | None = None, *, force: bool = False
) -> Path:
    """Saves a key under `profile` (default: the selected one, or `default`)."""
    name = profile or Credentials.load().selected_name() or "default"
    return store_profile(Profile(name, url, key), force=force)


def local_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('RAINIER_PORT') or DEFAULT_PORT}"


def default_url(profile: str | None = None) -> str:
    saved = Credentials.load().selected(profile)
    return os.environ.get("RAINIER_URL") or (saved.url if saved else "") or local_url()


class Client:
    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        timeout_s: float = 30.0,
        profile: str | None = None,
    ):
        saved = Credentials.load().selected(profile)
        if profile is not None and saved is None:
            raise UsageError(f"no profile {profile!r}; see `rainier profiles`")
        self.url = (url or default_url(profile)).rstrip("/")
        self.key = key or os.environ.get("RAINIER_API_KEY") or (saved.key if saved else None)
        self.timeout_s = timeout_s
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
            timeout = httpx.Timeout(self.timeout_s, connect=CONNECT_TIMEOUT_S)
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        return self._http

    def unreachable(self, exc: Exception) -> Unreachable:
        return Unreachable(
            f"cannot reach the control plane at {self.url} ({exc or type(exc).__name__}).\n"
            "Start one with `rainier server`, or point the CLI at yours with --url or RAINIER_URL."
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        retries = 3 if method == "GET" or "Idempotency-Key" in kwargs.get("headers", {}) else 0
        for attempt in range(retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise self.unreachable(exc) from None  # nobody listens: retrying cannot help
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise self.unreachable(exc) from None
                time.sleep(0.2 * (attempt + 1))
        return self.answer(response)

    @staticmethod
    def answer(response: httpx.Response) -> Any:
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

    def post(self, path: str, body: Any = None, *, idempotent: bool = False, **params: Any) -> Any:
        headers = {"Idempotency-Key": uuid.uuid4().hex} if idempotent else {}
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("POST", path, json=body, headers=headers, params=query)

    def delete(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("DELETE", path, params=query)
