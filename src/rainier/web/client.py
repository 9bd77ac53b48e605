"""The console's way to the REST API: HTTP to this very server, with the signed-in user's key.

Going through the API rather than the store means a page can never show or change more than
the key may through `rainier` or `curl`: tenancy, roles and validation are the API's alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from rainier.config import Settings

TIMEOUT_S = 30.0


class ApiFailure(Exception):
    """The API refused a request: its status and its own words for what is wrong."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def api_url(settings: Settings) -> str:
    """Where this server answers on the loopback, whatever address it listens on."""
    host = settings.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def message_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            return body["message"]
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    return response.reason_phrase


class Api:
    """One signed-in user's calls; shares the server's connection pool."""

    def __init__(self, http: httpx.AsyncClient, key: str):
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, headers=self.headers, **kwargs)
        if response.status_code >= 400:
            raise ApiFailure(response.status_code, message_of(response))
        return response

    async def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None and v != ""}
        return (await self.request("GET", path, params=clean)).json()

    async def post(self, path: str, body: Any = None) -> Any:
        return (await self.request("POST", path, json=body)).json()

    async def delete(self, path: str) -> Any:
        return (await self.request("DELETE", path)).json()

    async def stream(self, path: str, body: Any) -> AsyncIterator[bytes]:
        """The raw bytes of a streamed answer (server-sent events) as they arrive."""
        request = self.http.build_request(
            "POST", path, json=body, headers=self.headers, timeout=httpx.Timeout(300.0)
        )
        response = await self.http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise ApiFailure(response.status_code, message_of(response))
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()


def new_http(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api_url(settings), timeout=TIMEOUT_S)
