"""The gateway's upstream client, and its relay of a stream, against real sockets: a small
server that answers as told."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from rainier.api.auth import Authenticator
from rainier.api.gateway import Gateway, Metered
from rainier.api.gateway_targets import Endpoint
from rainier.api.upstream import UpstreamError, UpstreamPool
from rainier.store.db import Store
from rainier.store.keys import JobTokens

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


def _answering(pieces: list[bytes]) -> Handler:
    """A replica that answers any request with a stream of `pieces`, then ends it."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n")
        writer.write(b"content-type: text/event-stream\r\n\r\n")
        for piece in pieces:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    return handler


def _relay(tmp_path: Path, pieces: list[bytes]) -> tuple[bytes, Gateway, Endpoint]:
    """What the gateway passes on to a client of a replica that streams `pieces`."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    gateway = Gateway(store, Authenticator(store, JobTokens.load(tmp_path)))
    metered = cast(Metered, None)  # read only when an event carries a usage; these do not

    async def relayed() -> tuple[bytes, Endpoint]:
        server, url = await _serve(_answering(pieces))
        endpoint = Endpoint("job-1", url, 0, "m")
        upstream = await gateway.upstream.request("POST", url, "/v1/completions", b"{}")
        out = b"".join([e async for e in gateway._relay(upstream, endpoint, metered, False)])
        server.close()
        return out, endpoint

    out, endpoint = asyncio.run(relayed())
    return out, gateway, endpoint


def test_an_answer_cut_off_inside_an_event_reaches_the_client_as_an_error(
    tmp_path: Path,
) -> None:
    """A replica whose answer ends in the middle of an event (its server stopped while it
    wrote) must not have the half event passed on as a whole one, which the client cannot
    parse: the gateway ends the stream with its own error event and passes the replica over
    for a while. A stream whose last event only lacks the closing blank line is passed on."""
    first, cut = b'data: {"choices": [{"text": "a"}]}\n\n', b'data: {"choices": [{"text": "hel'
    out, gateway, endpoint = _relay(tmp_path, [first, cut])
    events = [e for e in out.split(b"\n\n") if e]
    assert events[0] + b"\n\n" == first
    error = json.loads(events[1].removeprefix(b"data: "))
    assert error["error"]["type"] == "server_error"
    assert "inside an event" in error["error"]["message"]
    assert cut not in out
    assert endpoint.url in gateway.down_until

    out, _, _ = _relay(tmp_path / "whole", [first, b"data: [DONE]"])
    assert out == first + b"data: [DONE]\n\n"


def test_text_with_unicode_line_separators_arrives_whole(tmp_path: Path) -> None:
    """Every chunk of a stream the gateway asked usage for carries `"usage": null`, so it is
    read line by line; lines end only at CR and LF in an event stream, while Python's
    `splitlines` also ends them at U+2028, U+2029, U+0085 and more, which JSON leaves as
    they are in a string. A model's text holding one reached the client cut in two."""
    text = "a\u2028b\u2029c\x85d\x1c\x0be"
    chunk = {"choices": [{"index": 0, "text": text}], "usage": None}
    event = f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
    out, _, _ = _relay(tmp_path, [event, b"data: [DONE]\n\n"])
    first = out.split(b"\n\n")[0]
    assert json.loads(first.decode().removeprefix("data: "))["choices"][0]["text"] == text
