"""`rainier chat MODEL`: talk to a deployment from the terminal.

It speaks to the gateway's `/v1/chat/completions` with the key and URL this CLI already uses,
so what works here works for an application with the same key (same limits, same metering).
Lines come from stdin, so a conversation can be piped in as well as typed; the whole history
is sent each turn because the server keeps no conversation state.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click
import httpx

from rainier.cli.client import Client, UsageError

EXIT_WORDS = ("/exit", "/quit")


class ChatError(click.ClickException):
    """The gateway refused a turn (bad model, limits, no replica): it says why."""


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON chunks of a server-sent event stream, up to `[DONE]`."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            continue
        if isinstance(chunk, dict):
            if "error" in chunk:
                raise ChatError(str(chunk["error"].get("message", chunk["error"])))
            yield chunk


def _error_of(response: httpx.Response) -> str:
    response.read()
    try:
        error = response.json().get("error") or {}
        message = str(error.get("message") or response.text)
    except (ValueError, AttributeError):
        message = response.text
    retry = response.headers.get("retry-after")
    return f"{response.status_code}: {message}" + (f" (retry after {retry}s)" if retry else "")


def turn(
    http: httpx.Client, body: dict[str, Any], out: TextIO
) -> tuple[str, dict[str, Any] | None]:
    """Streams one answer to `out` as its tokens arrive; (the whole answer, its usage)."""
    parts: list[str] = []
    usage: dict[str, Any] | None = None
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            message = _error_of(response)
            if response.status_code in (400, 404, 422):
                raise UsageError(message)
            raise ChatError(message)
        for chunk in _events(response):
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    parts.append(piece)
                    out.write(piece)
                    out.flush()
    out.write("\n")
    out.flush()
    return "".join(parts), usage


@click.command("chat")
@click.argument("model")
@click.option("--system", help="a system message that opens the conversation")
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(0.0, 2.0), default=0.7, show_default=True)
@click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0)
@click.option("--seed", type=int, help="for reproducible sampling")
@click.option("--usage", "show_usage", is_flag=True, help="print token counts after each answer")
@click.pass_context
def chat(
    ctx: click.Context,
    model: str,
    system: str | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    show_usage: bool,
) -> None:
    """Chat with a deployment: one line is one message; /exit or end of input ends it."""
    c = Client(ctx.obj.get("url") if ctx.obj else None)
    if not c.key:
        raise UsageError("no API key: run `rainier login KEY` or set RAINIER_API_KEY")
    http = httpx.Client(
        base_url=c.url,
        headers={"Authorization": f"Bearer {c.key}"},
        timeout=httpx.Timeout(10.0, read=600.0),
    )
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    interactive = sys.stdin.isatty()
    with http:
        while True:
            if interactive:
                click.echo("> ", nl=False)
            line = sys.stdin.readline()
            if not line:
                break
            text = line.strip()
            if text in EXIT_WORDS:
                break
            if not text:
                continue
            messages.append({"role": "user", "content": text})
            body: dict[str, Any] = {
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            if seed is not None:
                body["seed"] = seed
            try:
                try:
                    answer, usage = turn(http, body, sys.stdout)
                except httpx.TransportError as exc:
                    raise ChatError(f"cannot reach the gateway at {c.url}: {exc}") from None
            except click.ClickException as exc:
                if not interactive:
                    raise
                # At a terminal a refused turn (a rate limit, say) is not the end: try again.
                messages.pop()
                click.echo(f"error: {exc.format_message()}", err=True)
                continue
            messages.append({"role": "assistant", "content": answer})
            if show_usage and usage:
                click.echo(
                    f"[{usage.get('prompt_tokens')} prompt + "
                    f"{usage.get('completion_tokens')} completion tokens]",
                    err=True,
                )
