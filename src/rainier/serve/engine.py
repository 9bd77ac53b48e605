"""The engine: requests in, one batched forward pass per `step()`, token deltas out.

The engine is synchronous and single-threaded on purpose; whoever drives it (the server's
engine thread, a benchmark, a test) decides when to step. Each step asks the scheduler what to
run, lays it out as one flat batch over the paged KV cache, samples the sequences whose prompt
is fully computed, and turns new tokens into text, checking stop conditions.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rainier.serve.batch import ScheduledChunk, build_batch
from rainier.serve.batch_scheduler import BatchScheduler
from rainier.serve.config import EngineConfig, GenerationDefaults, HFModelConfig
from rainier.serve.detokenizer import find_stop, releasable
from rainier.serve.kv_cache import BlockManager
from rainier.serve.model import LlamaModel, read_safetensors
from rainier.serve.sampling import SamplingParams, make_generator, sample_batch
from rainier.serve.sequence import RequestOutput, SeqStatus, Sequence
from rainier.serve.tokenizer import ModelTokenizer


class RequestError(ValueError):
    """A request the engine cannot take as it is; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    num_preemptions: int


def check_prompt(
    prompt_ids: list[int], max_tokens: int | None, vocab_size: int, max_model_len: int
) -> None:
    """Refuse what could never finish, before it takes a place in the queue. A function of the
    model's limits alone, so an HTTP front-end in another process than the engine can check a
    request without a round trip."""
    num_prompt_tokens = len(prompt_ids)
    if any(t < 0 or t >= vocab_size for t in prompt_ids):
        raise RequestError(f"prompt token ids must be in [0, {vocab_size})", param="prompt")
    if num_prompt_tokens == 0:
        raise RequestError("the prompt is empty", param="prompt")
    if num_prompt_tokens >= max_model_len:
        raise RequestError(
            f"This model's maximum context length is {max_model_len} tokens, "
            f"but the prompt has {num_prompt_tokens} tokens.",
            param="messages",
            code="context_length_exceeded",
        )
    if max_tokens is not None and num_prompt_tokens + max_tokens > max_model_len:
        raise RequestError(
            f"This model's maximum context length is {max_model_len} tokens, but "
            f"{num_prompt_tokens} prompt tokens plus max_tokens={max_tokens} exceed it.",
            param="max_tokens",
            code="context_length_exceeded",
        )


def num_kv_blocks(model: LlamaModel, config: EngineConfig) -> int:
    bytes_per_block = model.kv_bytes_per_token() * config.block_size
    return int(config.kv_memory_mb * 1024 * 1024 // bytes_per_block)


class LLMEngine:
    def __init__(
        self,
        model: LlamaModel,
        tokenizer: ModelTokenizer,
        config: EngineConfig,
        generation_defaults: GenerationDefaults | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        tokenizer.byte_table  # noqa: B018 (built now, not on the first request)
        self.config = config
        self.generation_defaults = generation_defaults or GenerationDefaults()
        num_blocks = num_kv_blocks(model, config)
        if num_blocks < 1:
            raise ValueError(
                f"kv_memory_mb={config.kv_memory_mb} holds no block of {config.block_size} tokens"
            )
        self.block_manager = BlockManager(
            num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.kv_cache = model.new_kv_cache(num_blocks, config.block_size)
        self.scheduler = BatchScheduler(
            self.block_manager, config.max_batch_tokens, config.max_num_seqs
        )
        self.max_model_len = min(
            model.config.max_position_embeddings,
            num_blocks * config.block_size,
            config.max_model_len or model.config.max_position_embeddings,
        )
        self.eos_token_ids = frozenset(
            model.config.eos_token_ids
            + self.generation_defaults.eos_token_ids
            + tokenizer.eos_token_ids
        )
        self._arrivals = itertools.count()
        self._sequences: dict[str, Sequence] = {}

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, config: EngineConfig) -> LLMEngine:
        path = Path(model_dir)
        device = torch.device(config.device)
        dtype = getattr(torch, config.dtype)
        model = LlamaModel(HFModelConfig.from_dir(path), read_safetensors(path), device, dtype)
        return cls(model, ModelTokenizer.from_dir(path), config, GenerationDefaults.from_dir(path))

    @property
    def model_config(self) -> HFModelConfig:
        return self.model.config

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            kv_blocks_used=self.block_manager.num_used_blocks,
            kv_blocks_total=self.block_manager.num_blocks,
            num_preemptions=self.scheduler.num_preemptions,
        )

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work

    def check_request(self, prompt_ids: list[int], max_tokens: int | None) -> None:
        check_prompt(prompt_ids, max_tokens, self.model_config.vocab_size, self.max_model_len)

    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        if request_id in self._sequences:
            raise RequestError(f"request id {request_id!r} is already in use")
        self.check_request(prompt_ids, params.max_tokens)
        seq = Sequence(
            seq_id=request_id,
            token_ids=list(prompt_ids),
            num_prompt_tokens=len(prompt_ids),
            params=params,
            arrival_index=next(self._arrivals),
            arrival_time=time.monotonic(),
            generator=make_generator(params.seed),
            detokenizer=self.tokenizer.detokenizer(prompt_ids, params.skip_special_tokens),
        )
        self._sequences[request_id] = seq
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> bool:
        seq = self._sequences.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.remove(request_id)
        return True

    def abort_all(self) -> list[str]:
        ids = list(self._sequences)
        for request_id in ids:
            self.abort(request_id)
        return ids

    def step(self) -> list[RequestOutput]:
        plan = self.scheduler.schedule()
        if not plan.scheduled:
            return []
        chunks = []
        for seq, num_new in plan.scheduled:
            start = seq.num_computed
            chunks.append(
                ScheduledChunk(
                    token_ids=seq.token_ids[start : start + num_new],
                    start_pos=start,
                    block_table=self.block_manager.block_table(seq.seq_id),
                    needs_logits=start + num_new == seq.num_tokens,
                )
            )
        batch = build_batch(
            chunks,
            self.config.block_size,
            self.model.device,
            self.model.dtype,
            groups=self.model.kernels is None,
        )
        logits = self.model.forward(batch, self.kv_cache)
        sampling = [
            seq for (seq, _), c in zip(plan.scheduled, chunks, strict=True) if c.needs_logits
        ]
        tokens, logprobs = sample_batch(
            logits,
            [s.params for s in sampling],
            [s.generator for s in sampling],
            [s.output_ids if s.params.penalized else () for s in sampling],
        )
        now = time.monotonic()
        for seq, num_new in plan.scheduled:
            seq.num_computed += num_new
            self.block_manager.commit(seq.seq_id, seq.token_ids, seq.num_computed)
        outputs = []
        for seq, token, logprob in zip(sampling, tokens, logprobs, strict=True):
            first = seq.first_token_time is None
            self._append_token(seq, token, now)
            if logprob is not None:
                seq.pending_logprobs.append(logprob)
            if seq.finished:
                self.scheduler.finish(seq)
                self._sequences.pop(seq.seq_id, None)
            outputs.append(self._drain(seq, now, first))
        return outputs

    def _append_token(self, seq: Sequence, token: int, now: float) -> None:
        seq.token_ids.append(token)
        seq.pending_token_ids.append(token)
        if seq.first_token_time is None:
            seq.first_token_time = now
        seq.last_token_time = now
        params = seq.params
        stop_token = token in params.stop_token_ids or (
            token in self.eos_token_ids and not params.ignore_eos
        )
        if not stop_token:
            seq.detokenizer.push(token)
        out_of_room = (
            seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len
        )
        if stop_token or out_of_room:
            seq.detokenizer.flush()
        seq.text = seq.detokenizer.text
        matched = self._stop_string(seq)
        if matched is not None:
            self._finish(seq, "stop", matched)
        elif stop_token:
            self._finish(seq, "stop", token)
        elif out_of_room:
            self._finish(seq, "length", None)

    def _stop_string(self, seq: Sequence) -> str | None:
        """The stop string now in the text, if any; the text is cut where it starts."""
        stop = seq.params.stop
        if not stop:
            return None
        index = find_stop(seq.text, stop, seq.stop_searched)
        seq.stop_searched = len(seq.text)
        if index is None:
            return None
        matched = next(s for s in stop if s and seq.text.startswith(s, index))
        seq.text = seq.text[:index]
        return matched

    def _finish(self, seq: Sequence, reason: str, stop_reason: str | int | None) -> None:
        seq.finish_reason = reason
        seq.stop_reason = stop_reason
        seq.status = SeqStatus.FINISHED

    def _drain(self, seq: Sequence, now: float, first: bool) -> RequestOutput:
        upto = releasable(seq.text, seq.params.stop, seq.finished)
        text = seq.text[seq.emitted_chars : max(upto, seq.emitted_chars)]
        seq.emitted_chars = max(upto, seq.emitted_chars)
        out = RequestOutput(
            request_id=seq.seq_id,
            text=text,
            token_ids=seq.pending_token_ids,
            logprobs=seq.pending_logprobs,
            finished=seq.finished,
            finish_reason=seq.finish_reason,
            stop_reason=seq.stop_reason,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_output_tokens=seq.num_output_tokens,
            num_cached_tokens=seq.num_cached_tokens,
            time=now,
            first_token=first,
        )
        seq.pending_token_ids = []
        seq.pending_logprobs = []
        return out
