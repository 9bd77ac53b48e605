"""What every request meets first: the body size limit and the answer to OPTIONS.

A body larger than the limit is refused with 413 before it is read whole: from its
`Content-Length` at once, or, for a chunked body, as soon as the bytes received pass the limit.
The gateway's `/v1` takes larger bodies than the REST API (long prompts), and answers in
OpenAI's error shape.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20
MAX_GATEWAY_BODY_BYTES = 8 << 20
GATEWAY_PREFIX = "/v1/"


class BodyTooLarge(Exception):
    pass


def is_gateway(path: str) -> bool:
    return path == "/v1" or path.startswith(GATEWAY_PREFIX)


def error_body(path: str, status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The error shape of the API `path` belongs to: OpenAI's under `/v1`, ours elsewhere."""
    if is_gateway(path):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"message": message}


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method some route of `app` answers at `path` (Starlette's own 405 names only the
    first route that matched the path)."""
    methods: set[str] = set()
    for route in getattr(getattr(app, "router", None), "routes", []):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and getattr(route, "methods", None):
            methods |= set(route.methods)
    if methods:
        methods |= {"HEAD", "OPTIONS"} if "GET" in methods else {"OPTIONS"}
    return sorted(methods)


class Edge:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] == "OPTIONS":
            await self._options(scope, send)
            return
        limit = MAX_GATEWAY_BODY_BYTES if is_gateway(path) else MAX_BODY_BYTES
        length = _content_length(scope)
        if length is not None and length > limit:
            await _refuse(send, path, limit)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await _refuse(send, path, limit)

    async def _options(self, scope: Scope, send: Send) -> None:
        methods = allowed_methods(scope.get("app"), scope["path"])
        if not methods:
            await _send_json(send, 404, error_body(scope["path"], 404, "not found"))
            return
        headers = [(b"allow", ", ".join(methods).encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, path: str, limit: int) -> None:
    message = f"the request body is larger than {limit} bytes"
    await _send_json(send, 413, error_body(path, 413, message, "request_too_large"))


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
