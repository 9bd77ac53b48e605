"""Server-sent events over ASGI, as both the replicas and the gateway stream them.

Starlette's `StreamingResponse` ends every stream with an empty body message (one more write,
just for the chunked terminator) and, on servers speaking ASGI spec < 2.4 (uvicorn), runs the
stream in an anyio task group beside a task that waits for the disconnect. Per token of every
stream, and per request through the gateway, that is measurable. This response sends the
chunk that ends an OpenAI stream (`data: [DONE]`) as the last body message, so the terminator
leaves in the same write, and watches for the disconnect with one plain task that cancels the
stream when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"


async def _until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        continue


class EventStreamResponse(Response):
    """A `Response` (so frameworks pass it through untouched) that streams `events`."""

    def __init__(
        self,
        events: AsyncIterator[bytes] | AsyncIterator[str],
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        self.events = events
        self.status_code = status_code
        self.background = None
        self.body = b""
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        self.raw_headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        def on_disconnect(watcher: asyncio.Future[None]) -> None:
            nonlocal gone
            if not watcher.cancelled() and watcher.exception() is None:
                gone = True
                task.cancel()

        watcher = asyncio.ensure_future(_until_disconnected(receive))
        watcher.add_done_callback(on_disconnect)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            ended = False
            async for event in self.events:
                chunk = event.encode() if isinstance(event, str) else event
                ended = chunk.endswith(DONE)
                await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
                if ended:
                    break
            watcher.remove_done_callback(on_disconnect)
            if not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            async for _ in self.events:  # let the source finish (a replica's connection is
                pass  # then read to its end and kept for the next request)
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
        finally:
            watcher.remove_done_callback(on_disconnect)
            watcher.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
