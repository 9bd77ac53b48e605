"""Engine results in OpenAI's response vocabulary: usage, logprobs, server-sent events."""

from __future__ import annotations

import json

from rainier.serve.protocol import (
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionLogprobs,
    PromptTokensDetails,
    TopLogprob,
    Usage,
)
from rainier.serve.sampling import TokenLogprob
from rainier.serve.tokenizer import ModelTokenizer


def sse(payload: dict[str, object] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
    )


def completion_logprobs(
    tokenizer: ModelTokenizer, entries: list[TokenLogprob], text_offset: int
) -> CompletionLogprobs:
    """The legacy completions format. Its alternatives are a dict keyed by token text, so two
    tokens with the same text keep the likelier one."""
    result = CompletionLogprobs()
    for entry in entries:
        token = tokenizer.token_text(entry.token_id)
        top: dict[str, float] = {}
        for token_id, logprob in entry.top:
            top.setdefault(tokenizer.token_text(token_id), logprob)
        result.tokens.append(token)
        result.token_logprobs.append(entry.logprob)
        result.top_logprobs.append(top)
        result.text_offset.append(text_offset)
        text_offset += len(token)
    return result


def chat_logprobs(tokenizer: ModelTokenizer, entries: list[TokenLogprob]) -> ChatLogprobs:
    def top(token_id: int, logprob: float) -> TopLogprob:
        return TopLogprob(
            token=tokenizer.token_text(token_id),
            logprob=logprob,
            bytes=list(tokenizer.token_bytes(token_id)),
        )

    content = []
    for entry in entries:
        chosen = top(entry.token_id, entry.logprob)
        content.append(
            ChatTokenLogprob(
                **chosen.model_dump(), top_logprobs=[top(t, lp) for t, lp in entry.top]
            )
        )
    return ChatLogprobs(content=content)
