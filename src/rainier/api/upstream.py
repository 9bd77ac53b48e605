"""HTTP/1.1 to replicas: keep-alive connections, `httptools` parsing, bodies as they arrive.

The gateway adds one hop to every request, and the client side of that hop was most of what
it cost: a general-purpose client builds request and response objects, timers, cookie and
tracing hooks per request. Replicas are our own servers on a private network, so this client
does only what that needs: POST (or GET) a body, read the status and headers, then the body
chunk by chunk (chunked or sized), and put the connection back for the next request.

A connection the replica closed while it sat idle in the pool shows up as a failure before any
byte of the response; such a request is sent again once on a new connection, so a healthy
replica is never taken for a dead one because of a stale keep-alive.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

# Idle connections are dropped before servers usually close them (uvicorn: after 5 s).
IDLE_TTL_S = 4.0


class UpstreamError(ConnectionError):
    """The connection failed or closed before the response was complete."""


class UpstreamResponse:
    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._connection = connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._headers_done: asyncio.Future[None] = connection.loop.create_future()
        self.complete = False
        self.received_any = False
        self._error: BaseException | None = None
        self._released = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises `UpstreamError` if it is cut short and
        `TimeoutError` if the replica goes quiet for the read timeout."""
        while True:
            while self._chunks:
                yield self._chunks.popleft()
            if self._error is not None:
                raise self._error
            if self.complete:
                return
            await self._wait()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def release(self) -> None:
        """Back to the pool if the response was read to its end, closed otherwise."""
        if self._released:
            return
        self._released = True
        self._connection.finished(self.complete and self._error is None)

    async def _wait(self) -> None:
        connection = self._connection
        waiter = self._waiter = connection.loop.create_future()
        timer = connection.loop.call_later(connection.read_timeout_s, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._error = TimeoutError("the replica sent nothing for the read timeout")
            waiter.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.complete:
            return
        self._error = error
        if not self._headers_done.done():
            self._headers_done.set_exception(error)
        self._wake()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.read_timeout_s = pool.read_timeout_s
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self.used = False

    def send(self, request: bytes) -> UpstreamResponse:
        assert self.transport is not None
        self.response = UpstreamResponse(self)
        self.transport.write(request)
        return self.response

    def finished(self, complete: bool) -> None:
        self.response = None
        if complete and self.keep_alive and not self.closed:
            self.used = True
            self.idle_since = time.monotonic()
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # bytes nobody asked for: the connection is not in a known state
            return
        self.response.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.response._fail(UpstreamError(f"malformed response from the replica: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response._fail(UpstreamError(f"the replica closed the connection ({exc})"))

    # -- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if not self.response._headers_done.done():
            self.response._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._feed(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response._finish()


class UpstreamPool:
    def __init__(self, connect_timeout_s: float = 2.0, read_timeout_s: float = 600.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(
        self,
        method: str,
        url: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> UpstreamResponse:
        """Sends the request and returns once the status and headers are in; the caller
        reads the body and must `release()` the response."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        lines = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"content-length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        key = (host, port)
        connection = self._take(key)
        if connection is not None:
            response = connection.send(request)
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    await response._headers_done
                return response
            except UpstreamError:
                if response.received_any:
                    raise
                response.release()  # a stale keep-alive: once more on a new connection
        connection = await self._connect(key)
        response = connection.send(request)
        try:
            async with asyncio.timeout(self.read_timeout_s):
                await response._headers_done
        except BaseException:
            response.release()
            raise
        return response

    def put_back(self, connection: _Connection) -> None:
        self._idle.setdefault(connection.key, []).append(connection)

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_TTL_S:
                return connection
            connection.close()
        return None

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, key), key[0], key[1]
                )
        except TimeoutError:
            raise UpstreamError(f"connecting to {key[0]}:{key[1]} timed out") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {key[0]}:{key[1]}: {exc}") from None
        return protocol
