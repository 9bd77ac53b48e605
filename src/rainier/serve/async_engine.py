"""The HTTP server's side of the engine: requests out, each step's outputs into per-request
asyncio queues.

A forward pass holds the CPU (or waits on the GPU) for milliseconds to seconds; on the event
loop it would stall every connection. So the engine core (`engine_core`) runs elsewhere: on a
thread of its own (`AsyncEngine`, for tests and embedded use) or in a process of its own
(`engine_process.ProcessEngine`, what a replica runs). Either way the event loop does all the
bookkeeping of who waits for what: one `StepResult` per step arrives on the loop, which updates
the gauges, then feeds each request's queue.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rainier.serve.config import GenerationDefaults
from rainier.serve.engine import LLMEngine, check_prompt
from rainier.serve.engine_core import (
    AbortRequest,
    AddRequest,
    EngineCore,
    EngineFailure,
    EngineMessage,
    Shutdown,
    StepResult,
    run_core,
)
from rainier.serve.metrics import ServeMetrics
from rainier.serve.sampling import SamplingParams
from rainier.serve.sequence import RequestOutput
from rainier.serve.tokenizer import ModelTokenizer

log = logging.getLogger(__name__)

__all__ = ["AsyncEngine", "EngineClient", "EngineFailure", "Sink"]

Sink = asyncio.Queue[RequestOutput | EngineFailure]
T = TypeVar("T")


@dataclass
class _Tracked:
    sink: Sink
    submitted_s: float
    last_token_s: float | None = None


@dataclass(frozen=True)
class ServedModel:
    """What the HTTP layer knows of the model: enough to tokenize, fill in defaults and refuse
    a request that could never fit, without the weights."""

    tokenizer: ModelTokenizer
    generation_defaults: GenerationDefaults
    vocab_size: int
    max_model_len: int


class EngineClient(ABC):
    """What the HTTP layer needs of an engine, wherever the engine runs. Subclasses start and
    stop the core and carry messages to it (`_send`); results come back through `_deliver`,
    always called on the event loop."""

    def __init__(self, model: ServedModel, metrics: ServeMetrics | None = None) -> None:
        self.tokenizer = model.tokenizer
        self.generation_defaults = model.generation_defaults
        self.vocab_size = model.vocab_size
        self.max_model_len = model.max_model_len
        self.metrics = metrics or ServeMetrics()
        self._tracked: dict[str, _Tracked] = {}
        self._load = (0, 0)
        self._stopped = False

    @property
    @abstractmethod
    def alive(self) -> bool:
        """Whether the core still runs (`/health` answers 503 once it does not)."""

    @abstractmethod
    def start(self) -> None:
        """Starts the core's side; called on the event loop that will receive results."""

    @abstractmethod
    def stop(self) -> None:
        """Stops the core and waits for it; requests still tracked then fail."""

    @abstractmethod
    def _send(self, message: EngineMessage) -> None:
        """Hands a message to the core without blocking the event loop."""

    def check_request(self, prompt_ids: list[int], max_tokens: int | None) -> None:
        check_prompt(prompt_ids, max_tokens, self.vocab_size, self.max_model_len)

    def load(self) -> dict[str, int]:
        running, waiting = self._load
        return {"running": running, "waiting": waiting}

    def submit(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams, sink: Sink
    ) -> None:
        """Queue a request; outputs (or one `EngineFailure`) will arrive in `sink`."""
        if self._stopped or not self.alive:
            sink.put_nowait(EngineFailure("the engine is not running"))
            return
        self._tracked[request_id] = _Tracked(sink, time.monotonic())
        self.metrics.prompt_tokens.inc(len(prompt_ids))
        self._send(AddRequest(request_id, prompt_ids, params))

    def abort(self, request_id: str) -> None:
        if self._tracked.pop(request_id, None) is not None:
            self.metrics.finished.labels("abort").inc()
            self._send(AbortRequest(request_id))

    def _deliver(self, result: StepResult) -> None:
        if result.stats is not None:
            self._load = (result.stats.running, result.stats.waiting)
            self.metrics.observe_stats(result.stats)
        for request_id, failure in result.failures:
            tracked = self._tracked.pop(request_id, None)
            if tracked is not None:
                tracked.sink.put_nowait(failure)
        metrics = self.metrics
        for out in result.outputs:
            tracked = self._tracked.get(out.request_id)
            if tracked is None:
                continue
            if out.first_token:
                metrics.ttft.observe(out.time - tracked.submitted_s)
            elif tracked.last_token_s is not None:
                metrics.itl.observe(out.time - tracked.last_token_s)
            tracked.last_token_s = out.time
            metrics.generation_tokens.inc(len(out.token_ids))
            if out.finished:
                del self._tracked[out.request_id]
                metrics.finished.labels(out.finish_reason or "unknown").inc()
                metrics.e2e.observe(out.time - tracked.submitted_s)
            tracked.sink.put_nowait(out)

    def _fail_all(self, message: str) -> None:
        tracked, self._tracked = self._tracked, {}
        for t in tracked.values():
            t.sink.put_nowait(EngineFailure(message))


class AsyncEngine(EngineClient):
    """The engine core on a thread of this process."""

    def __init__(self, engine: LLMEngine, metrics: ServeMetrics | None = None) -> None:
        model = ServedModel(
            engine.tokenizer,
            engine.generation_defaults,
            engine.model_config.vocab_size,
            engine.max_model_len,
        )
        super().__init__(model, metrics)
        self.engine = engine
        self._inbox: queue.SimpleQueue[EngineMessage] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="rainier-engine", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics.observe_stats(engine.stats())

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(Shutdown())
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _send(self, message: EngineMessage) -> None:
        self._inbox.put(message)

    def _receive(self, block: bool) -> EngineMessage | None:
        try:
            return self._inbox.get(block=block)
        except queue.Empty:
            return None

    def _run(self) -> None:
        try:
            run_core(EngineCore(self.engine), self._receive, self._publish)
        except Exception:
            log.exception("the engine loop failed")
        finally:
            self._stopped = True
            self._on_loop(self._fail_all, "the engine stopped")

    def _publish(self, result: StepResult) -> None:
        self._on_loop(self._deliver, result)

    def _on_loop(self, callback: Callable[[T], None], arg: T) -> None:
        """Runs `callback(arg)` on the event loop, if there still is one."""
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:
            log.debug("event loop closed before the engine's news could be delivered")
