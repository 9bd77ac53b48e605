"""What every request meets first: the body size limit and the answer to OPTIONS.

A body larger than the limit is refused with 413 before it is read whole: from its
`Content-Length` at once, or, for a chunked body, as soon as the bytes received pass the limit.
The gateway's `/v1` takes larger bodies than the REST API (long prompts), and answers in
OpenAI's error shape.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20
# Text with a NUL character cannot be stored (PostgreSQL refuses it) and is never meant.
NUL_MESSAGE = "text may not contain NUL characters (\\u0000, %00)"
_JSON_NUL = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")
MAX_GATEWAY_BODY_BYTES = 8 << 20
GATEWAY_PREFIX = "/v1/"


def is_gateway(path: str) -> bool:
    return path == "/v1" or path.startswith(GATEWAY_PREFIX)


def error_body(path: str, status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The error shape of the API `path` belongs to: OpenAI's under `/v1`, ours elsewhere."""
    if is_gateway(path):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"message": message}


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method `app` answers at `path`, as its OpenAPI document says (a path written out
    wins over a template that also matches it, as there); routes the document leaves out are
    asked themselves. Starlette's own 405 names only the first route that matched the path.
    Only OPTIONS and 405 answers need this."""
    methods = set()
    documented: dict[str, Any] = app.openapi().get("paths", {}) if hasattr(app, "openapi") else {}
    if path in documented:
        methods = {m.upper() for m in documented[path]}
    else:
        for template, item in documented.items():
            if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), path):
                methods |= {m.upper() for m in item}
    if not methods:
        routes = getattr(getattr(app, "router", None), "routes", [])
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            scope: Scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            scope["headers"] = []
            if any(route.matches(scope)[0] == Match.FULL for route in routes):
                methods.add(method)
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
        gateway = is_gateway(path)
        if b"%00" in scope.get("raw_path", b"") or b"%00" in scope["query_string"]:
            status = 400 if gateway else 422
            await _send_json(send, status, error_body(path, status, NUL_MESSAGE, "nul_character"))
            return
        limit = MAX_GATEWAY_BODY_BYTES if gateway else MAX_BODY_BYTES
        length = _content_length(scope)
        if length is not None and length > limit:
            await _refuse(send, path, limit)
            return
        if gateway and length is not None:
            await self.app(scope, receive, send)  # the hot path: the gateway reads it itself
            return
        # other bodies are read here, up to the limit, checked, and handed on whole
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > limit:
                await _refuse(send, path, limit)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not gateway and b"\\u0000" in body and _JSON_NUL.search(body):
            await _send_json(send, 422, error_body(path, 422, NUL_MESSAGE, "nul_character"))
            return
        await self.app(scope, _replay([body], None, receive), send)

    async def _options(self, scope: Scope, send: Send) -> None:
        methods = allowed_methods(scope.get("app"), scope["path"])
        if not methods:
            await _send_json(send, 404, error_body(scope["path"], 404, "not found"))
            return
        headers = [(b"allow", ", ".join(methods).encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _replay(chunks: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    """A `receive` that first gives the body read so far, in one message, then goes on."""
    first: list[Message] = (
        [pending] if pending is not None else [{"type": "http.request", "body": b"".join(chunks)}]
    )

    async def replay() -> Message:
        return first.pop() if first else await receive()

    return replay


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
