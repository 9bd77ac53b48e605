"""Chat messages to prompt text, through the model's own Jinja chat template.

Templates come from model files, i.e. from whoever uploaded the model, so they run in Jinja's
immutable sandbox. A model without a template gets `DEFAULT_CHAT_TEMPLATE`: each message as
`<|role|>` on its own line followed by the content, then `<|assistant|>` to prompt the reply.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class ChatTemplateError(ValueError):
    """The template refused the conversation (e.g. roles out of the order it expects)."""


def _raise(message: str) -> None:
    raise ChatTemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_chat(
    messages: list[dict[str, str]],
    template: str | None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    try:
        return str(
            _compile(template or DEFAULT_CHAT_TEMPLATE).render(
                messages=messages,
                bos_token=bos_token or "",
                eos_token=eos_token or "",
                add_generation_prompt=add_generation_prompt,
            )
        )
    except ChatTemplateError:
        raise
    except TemplateError as exc:
        raise ChatTemplateError(f"chat template failed: {exc}") from None
