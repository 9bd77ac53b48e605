"""Choosing the next token from logits: a pure function of (logits, params, generator).

Kept free of engine state so it can be tested on hand-made logits, and so a request's seeded
generator is the only thing that decides its random draws: the same seed gives the same text
whatever else shares the batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

MAX_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        checks = {
            "max_tokens": self.max_tokens >= 1,
            "temperature": 0.0 <= self.temperature <= 2.0,
            "top_p": 0.0 < self.top_p <= 1.0,
            "top_k": self.top_k >= -1,
            "logprobs": self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS,
            "presence_penalty": -2.0 <= self.presence_penalty <= 2.0,
            "frequency_penalty": -2.0 <= self.frequency_penalty <= 2.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name}: out of range ({getattr(self, name)!r})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def apply_penalties(
    logits: torch.Tensor, params: SamplingParams, output_ids: Sequence[int]
) -> torch.Tensor:
    if not output_ids or (params.presence_penalty == 0 and params.frequency_penalty == 0):
        return logits
    counts = Counter(output_ids)
    ids = torch.tensor(list(counts.keys()), dtype=torch.long)
    freq = torch.tensor(list(counts.values()), dtype=logits.dtype)
    out = logits.clone()
    out[ids] -= params.frequency_penalty * freq + params.presence_penalty
    return out


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits with everything outside the top-k and the top-p nucleus set to -inf."""
    out = logits
    if 0 < top_k < out.shape[-1]:
        kth = torch.topk(out, top_k).values[-1]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(out, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def sample_token(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator,
    output_ids: Sequence[int] = (),
) -> int:
    """One token from a [vocab] row of logits."""
    logits = apply_penalties(logits, params, output_ids)
    if params.greedy:
        return int(torch.argmax(logits))
    scaled = filter_logits(logits / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprob(logits: torch.Tensor, token_id: int, num_top: int) -> TokenLogprob:
    """The model's own log-probabilities (before temperature and filtering), as OpenAI reports."""
    logprobs = torch.log_softmax(logits, dim=-1)
    top: tuple[tuple[int, float], ...] = ()
    if num_top > 0:
        values, ids = torch.topk(logprobs, min(num_top, logprobs.shape[-1]))
        top = tuple((int(i), float(v)) for i, v in zip(ids, values, strict=True))
    return TokenLogprob(token_id, float(logprobs[token_id]), top)


def sample_batch(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator],
    output_ids: Sequence[Sequence[int]],
) -> tuple[list[int], list[TokenLogprob | None]]:
    """Next tokens for a [batch, vocab] block of logits, one row per sequence."""
    logits = logits.detach().to("cpu", torch.float32)
    tokens: list[int] = []
    logprobs: list[TokenLogprob | None] = []
    greedy_choice = torch.argmax(logits, dim=-1).tolist() if len(params) else []
    for row, p in enumerate(params):
        if p.greedy and not p.penalized:
            token = int(greedy_choice[row])
        else:
            token = sample_token(logits[row], p, generators[row], output_ids[row])
        tokens.append(token)
        logprobs.append(
            None if p.logprobs is None else token_logprob(logits[row], token, p.logprobs)
        )
    return tokens, logprobs
