"""Usage in an OpenAI answer: read from a whole body, or picked out of a stream of
server-sent events (the final usage chunk, which the gateway always asks the replica for and
drops again when the client did not ask for it)."""

from __future__ import annotations

import json
import re
from typing import Any

# The blank line that ends a server-sent event, in any of the line endings the format allows.
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


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
