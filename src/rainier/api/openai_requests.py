"""What the gateway checks of an OpenAI request body before it forwards it, and what it charges.

The gateway does not validate a body in full (the replica does, with the serving runtime's own
models); it checks only the shape of what it reads itself — `model`, `messages`, `prompt`,
`max_tokens`, `n` — and that the body is plain JSON (objects nested at most `MAX_JSON_DEPTH`
deep, no `NaN` or `Infinity`), so no body can make it fail instead of answering 400.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_JSON_DEPTH = 64
# What an answer is assumed to cost when the request sets no `max_tokens`: the server's own
# default for completions; for chat (which runs to the context length) a guess that the
# metered usage then corrects.
DEFAULT_MAX_TOKENS = {"/v1/completions": 16, "/v1/chat/completions": 256}
CHARS_PER_TOKEN = 4


class BadRequest(ValueError):
    """A body the gateway refuses; `param` names the field to blame, when one is."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


def _no_constants(name: str) -> Any:
    raise BadRequest(f"the body is not valid JSON: {name} is not a number")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest."""
    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    # a body with few brackets cannot nest deeply: count them in C before walking in Python
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _deeper_than(body, MAX_JSON_DEPTH):
        raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def _deeper_than(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def check_request(body: dict[str, Any], path: str) -> str:
    """The `model` the body names, once the fields the gateway reads have their shapes."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest("you must provide a model parameter", "model")
    if path == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty array of message objects", "messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise BadRequest(f"messages[{i}] must be an object", "messages")
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                raise BadRequest(
                    f"messages[{i}].content must be a string or an array of parts", "messages"
                )
    elif path == "/v1/completions" and not _is_prompt(body.get("prompt")):
        raise BadRequest(
            "prompt must be a string, an array of strings, an array of token ids or an array "
            "of arrays of token ids",
            "prompt",
        )
    for field in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise BadRequest(f"{field} must be an integer", field)
    return name


def _is_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return True
    if not isinstance(prompt, list):
        return False
    if all(isinstance(p, str) for p in prompt):
        return True
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return True
    return all(
        isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
        for p in prompt
    )


def estimate_tokens(body: dict[str, Any], path: str) -> int:
    """What a request may cost at most, before it runs: its prompt (token ids counted, text at
    about four characters a token, as the gateway holds no tokenizer) plus `max_tokens` for
    each of its `n` answers. `Gateway.settle` corrects it with the metered usage."""
    prompt: Any = body.get("prompt") if path.endswith("/completions") else None
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        prompt = (
            [m.get("content") for m in messages if isinstance(m, dict)]
            if isinstance(messages, list)
            else []
        )
    prompt_tokens = _prompt_size(prompt)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        limit = DEFAULT_MAX_TOKENS.get(path, 16)
    n = body.get("n")
    answers = n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1
    return prompt_tokens + limit * answers


def _prompt_size(prompt: Any) -> int:
    """Counted without recursion: a prompt is checked for shape, a message's parts are not."""
    size, stack = 0, [(prompt, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            size += max(1, math.ceil(len(item) / CHARS_PER_TOKEN))
        elif isinstance(item, int):
            size += 1
        elif depth < MAX_JSON_DEPTH and isinstance(item, dict):
            stack.append((item.get("text"), depth + 1))
        elif depth < MAX_JSON_DEPTH and isinstance(item, list):
            stack.extend((p, depth + 1) for p in item)
    return size
