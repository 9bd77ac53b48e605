"""The gateway's upstream client against real sockets: a small server that answers as told."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from rainier.api.upstream import UpstreamError, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def test_chunked_stream_arrives_in_pieces_and_the_connection_is_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n")
            writer.write(b"content-type: text/event-stream\r\n\r\n")
            for piece in (b"data: " + body + b"\n\n", b"data: [DONE]\n\n"):
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def scenario() -> None:
        server, url = await _serve(handler)
        pool = UpstreamPool()
        for i in range(3):
            response = await pool.request("POST", url, "/v1/x", f"req{i}".encode())
            assert response.status == 200
            assert response.headers["content-type"] == "text/event-stream"
            pieces = [chunk async for chunk in response.chunks()]
            response.release()
            assert b"".join(pieces) == f"data: req{i}\n\ndata: [DONE]\n\n".encode()
            assert len(pieces) == 2
        assert connections == 1
        pool.close()
        server.close()

    asyncio.run(scenario())


def test_a_stale_keep_alive_is_retried_on_a_new_connection() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await _read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # keep-alive was promised, but the server closes anyway

    async def scenario() -> None:
        server, url = await _serve(handler)
        pool = UpstreamPool()
        for _ in range(3):
            response = await pool.request("GET", url, "/health")
            assert await response.read() == b"ok"
            response.release()
            await asyncio.sleep(0.05)
        assert served == 3
        pool.close()
        server.close()

    asyncio.run(scenario())


def test_failures_are_upstream_errors_or_timeouts() -> None:
    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async def scenario() -> None:
        server, url = await _serve(truncated)
        pool = UpstreamPool(read_timeout_s=0.3)
        response = await pool.request("POST", url, "/v1/x", b"{}")
        with pytest.raises(UpstreamError):
            await response.read()
        response.release()
        server.close()

        server, url = await _serve(silent)
        response = await pool.request("POST", url, "/v1/x", b"{}")
        with pytest.raises(TimeoutError):
            await response.read()
        response.release()
        server.close()

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(UpstreamError):
            await pool.request("POST", f"http://127.0.0.1:{port}", "/v1/x", b"{}")
        pool.close()

    asyncio.run(scenario())
