"""The engine on a thread of its own, fed by the event loop.

A forward pass holds the CPU (or waits on the GPU) for milliseconds to seconds; on the event
loop it would stall every connection. So the engine steps in one dedicated thread, the only one
that touches it. Requests and aborts reach it through a queue, and each step's outputs go back
to the event loop with `call_soon_threadsafe` into the asyncio queue the request gave.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass

from rainier.serve.engine import LLMEngine, RequestError
from rainier.serve.metrics import ServeMetrics
from rainier.serve.sampling import SamplingParams
from rainier.serve.sequence import RequestOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineFailure:
    """Put in a request's sink instead of an output when the engine could not serve it."""

    message: str
    client_error: bool = False


Sink = asyncio.Queue[RequestOutput | EngineFailure]


@dataclass(frozen=True)
class _Add:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    sink: Sink
    loop: asyncio.AbstractEventLoop


@dataclass(frozen=True)
class _Abort:
    request_id: str


_STOP = object()


@dataclass
class _Tracked:
    sink: Sink
    loop: asyncio.AbstractEventLoop
    submitted_s: float
    last_token_s: float | None = None


class AsyncEngine:
    def __init__(self, engine: LLMEngine, metrics: ServeMetrics | None = None) -> None:
        self.engine = engine
        self.metrics = metrics or ServeMetrics()
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._tracked: dict[str, _Tracked] = {}
        self._thread = threading.Thread(target=self._run, name="rainier-engine", daemon=True)
        self._load = (0, 0)
        self.metrics.observe_stats(engine.stats())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def load(self) -> dict[str, int]:
        running, waiting = self._load
        return {"running": running, "waiting": waiting}

    def submit(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        sink: Sink,
    ) -> None:
        """Queue a request; outputs (or one `EngineFailure`) will arrive in `sink`."""
        if not self.alive:
            sink.put_nowait(EngineFailure("the engine is not running"))
            return
        self._inbox.put(_Add(request_id, prompt_ids, params, sink, asyncio.get_running_loop()))

    def abort(self, request_id: str) -> None:
        self._inbox.put(_Abort(request_id))

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._fail_all("the engine stopped")

    def _loop(self) -> None:
        while True:
            block = not self.engine.has_unfinished()
            try:
                message = self._inbox.get(block=block)
            except queue.Empty:
                message = None
            while message is not None:
                if message is _STOP:
                    self._fail_all("the server is shutting down")
                    return
                self._handle(message)
                try:
                    message = self._inbox.get_nowait()
                except queue.Empty:
                    message = None
            if self.engine.has_unfinished():
                self._step()
            self._publish_stats()

    def _handle(self, message: object) -> None:
        if isinstance(message, _Add):
            tracked = _Tracked(message.sink, message.loop, time.monotonic())
            try:
                self.engine.add_request(message.request_id, message.prompt_ids, message.params)
            except RequestError as exc:
                self._deliver(tracked, EngineFailure(str(exc), client_error=True))
                return
            except Exception:
                log.exception("could not add request %s", message.request_id)
                self._deliver(tracked, EngineFailure("the engine could not take this request"))
                return
            self._tracked[message.request_id] = tracked
            self.metrics.prompt_tokens.inc(len(message.prompt_ids))
        elif isinstance(message, _Abort) and message.request_id in self._tracked:
            del self._tracked[message.request_id]
            self.engine.abort(message.request_id)
            self.metrics.finished.labels("abort").inc()

    def _step(self) -> None:
        """One engine step. Gauges are refreshed before outputs are handed over, so a client
        that has its answer never reads load or KV usage from before that answer."""
        try:
            outputs = self.engine.step()
        except Exception:
            log.exception("engine step failed; failing the requests in flight")
            self.engine.abort_all()
            self._fail_all("the engine failed while running this request")
            return
        deliveries = []
        for out in outputs:
            tracked = self._tracked.get(out.request_id)
            if tracked is None:
                continue
            if out.first_token:
                self.metrics.ttft.observe(out.time - tracked.submitted_s)
            elif tracked.last_token_s is not None:
                self.metrics.itl.observe(out.time - tracked.last_token_s)
            tracked.last_token_s = out.time
            self.metrics.generation_tokens.inc(len(out.token_ids))
            if out.finished:
                del self._tracked[out.request_id]
                self.metrics.finished.labels(out.finish_reason or "unknown").inc()
            deliveries.append((tracked, out))
        self._publish_stats()
        for tracked, out in deliveries:
            self._deliver(tracked, out)

    def _publish_stats(self) -> None:
        stats = self.engine.stats()
        self._load = (stats.running, stats.waiting)
        self.metrics.observe_stats(stats)

    def _fail_all(self, message: str) -> None:
        for tracked in self._tracked.values():
            self._deliver(tracked, EngineFailure(message))
        self._tracked.clear()

    @staticmethod
    def _deliver(tracked: _Tracked, item: RequestOutput | EngineFailure) -> None:
        try:
            tracked.loop.call_soon_threadsafe(tracked.sink.put_nowait, item)
        except RuntimeError:
            log.debug("event loop closed before an output could be delivered")
