"""The engine driven by messages: requests and aborts in, one `StepResult` per step out.

This is the part of a replica that owns the model and the KV cache. It knows nothing of HTTP
or of how messages travel, so the same loop runs on a thread beside the HTTP server (tests,
embedded use) or alone in a process of its own (`engine_process`), where it does not share
the GIL with the code writing streams to clients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from rainier.serve.engine import EngineStats, LLMEngine, RequestError
from rainier.serve.sampling import SamplingParams
from rainier.serve.sequence import RequestOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineFailure:
    """Delivered to a request instead of an output when the engine could not serve it."""

    message: str
    client_error: bool = False


@dataclass(frozen=True)
class AddRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class AbortRequest:
    request_id: str


@dataclass(frozen=True)
class Shutdown:
    pass


EngineMessage = AddRequest | AbortRequest | Shutdown


@dataclass
class StepResult:
    """Everything one turn of the loop produced. `stats` is taken after the step, and the
    client applies it before handing out `outputs`, so whoever has an answer never reads load
    or KV usage from before it."""

    outputs: list[RequestOutput] = field(default_factory=list)
    failures: list[tuple[str, EngineFailure]] = field(default_factory=list)
    stats: EngineStats | None = None


class EngineCore:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine

    def handle(self, message: AddRequest | AbortRequest, result: StepResult) -> None:
        if isinstance(message, AddRequest):
            try:
                self.engine.add_request(message.request_id, message.prompt_ids, message.params)
            except RequestError as exc:
                result.failures.append((message.request_id, EngineFailure(str(exc), True)))
            except Exception:
                log.exception("could not add request %s", message.request_id)
                failure = EngineFailure("the engine could not take this request")
                result.failures.append((message.request_id, failure))
        else:
            self.engine.abort(message.request_id)

    def step(self, result: StepResult) -> None:
        """One engine step into `result`; a failing step fails every request in flight rather
        than leaving them waiting for tokens that will never come."""
        try:
            result.outputs.extend(self.engine.step())
        except Exception:
            log.exception("engine step failed; failing the requests in flight")
            failure = EngineFailure("the engine failed while running this request")
            result.failures.extend((rid, failure) for rid in self.engine.abort_all())

    def has_work(self) -> bool:
        return self.engine.has_unfinished()

    def stats(self) -> EngineStats:
        return self.engine.stats()


def run_core(
    core: EngineCore,
    receive: Callable[[bool], EngineMessage | None],
    publish: Callable[[StepResult], None],
) -> None:
    """The core's loop: take every message waiting (`receive(block)` blocks only when there is
    nothing to run), step, publish what the turn produced. Returns on `Shutdown`."""
    while True:
        result = StepResult()
        message = receive(not core.has_work())
        while message is not None:
            if isinstance(message, Shutdown):
                return
            core.handle(message, result)
            message = receive(False)
        if core.has_work():
            core.step(result)
        result.stats = core.stats()
        publish(result)
