"""Usage in an OpenAI answer: read from a whole body, or picked out of a stream of
server-sent events (the final usage chunk, which the gateway always asks the replica for and
drops again when the client did not ask for it)."""

from __future__ import annotations

import json
import re
from typing import Any

# The blank line that ends a server-sent event, in any of the line endings the format allows.
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(r"\r\n|\r|\n")


def event_lines(event: bytes) -> list[str]:
    """The lines of an event, split where the format ends lines: at CR and LF only. Python's
    `splitlines` also splits at U+2028, U+2029, U+0085 and others, which JSON leaves as they
    are inside a string, so a model's text holding one was cut in two."""
    return [line for line in _LINE_END.split(event.decode()) if line]


def is_whole_event(event: bytes) -> bool:
    """Whether what a stream ended with, without the blank line that ends an event, is still
    a whole one: each `data:` line `[DONE]` or a JSON document. A replica cut off while it
    wrote an event leaves half a JSON document, which relayed as an event reaches the client
    as one it cannot parse."""
    try:
        lines = event_lines(event)
    except UnicodeDecodeError:
        return False
    for line in lines:
        if not line.startswith("data:") or (payload := line[5:].strip()) == "[DONE]":
            continue
        try:
            json.loads(payload)
        except ValueError:
            return False
    return True


def usage_of(content: bytes) -> Any:
    try:
        return json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None


def usage_event(event: list[str], wants_usage: bool) -> tuple[Any, list[str] | None]:
    """(the usage the event carries or None, the event's lines to pass on or None)."""
    data = "\n".join(line[5:].lstrip() for line in event if line.startswith("data:"))
    if not data or data == "[DONE]" or '"usage"' not in data:
        return None, event
    try:
        chunk = json.loads(data)
    except ValueError:
        return None, event
    usage = chunk.get("usage") if isinstance(chunk, dict) else None
    if not usage or wants_usage:
        return usage or None, event
    if not chunk.get("choices"):
        return usage, None
    chunk.pop("usage", None)
    return usage, [f"data: {json.dumps(chunk, separators=(',', ':'))}"]
