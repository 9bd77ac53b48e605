"""A request's state while the engine works on it: tokens, progress, text and timing.

One sequence is one completion: a request for `n` choices becomes `n` sequences that share
their prompt blocks through the prefix cache, which keeps the scheduler unaware of `n`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from rainier.serve.detokenizer import Detokenizer
from rainier.serve.sampling import SamplingParams, TokenLogprob


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    arrival_index: int
    arrival_time: float
    generator: torch.Generator
    detokenizer: Detokenizer
    status: SeqStatus = SeqStatus.WAITING
    num_computed: int = 0
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    admitted_once: bool = False
    text: str = ""
    stop_searched: int = 0
    emitted_chars: int = 0
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    pending_token_ids: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def finished(self) -> bool:
        return self.status is SeqStatus.FINISHED


@dataclass(frozen=True)
class RequestOutput:
    """What one step produced for one sequence: deltas, so streaming is a straight copy."""

    request_id: str
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob]
    finished: bool
    finish_reason: str | None
    stop_reason: str | int | None
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    time: float
    first_token: bool
