"""The engine core in a process of its own, as a replica runs it.

On a thread beside the HTTP server the engine competes for the GIL with the code that parses
requests and writes one event per token per stream; with a few dozen streams that Python work
is as large as the step itself, and each waits for the other. In its own process the core
steps while the server writes. Messages cross two one-way pipes: requests and aborts one way,
one pickled `StepResult` per step the other, so the cost is per step, not per token.

The core ignores SIGINT and SIGTERM: the server decides when it stops (after its streams have
drained), and if the server dies the core sees its pipe close and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import select
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from rainier.allocator import keep_freed_memory
from rainier.serve.async_engine import EngineClient, ServedModel
from rainier.serve.config import EngineConfig, GenerationDefaults, HFModelConfig
from rainier.serve.engine_core import EngineCore, EngineMessage, Shutdown, StepResult, run_core
from rainier.serve.metrics import ServeMetrics
from rainier.serve.tokenizer import ModelTokenizer

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 600.0


class EngineStartError(RuntimeError):
    """The engine process could not load the model; the message is the process's reason."""


def _poller(connection: Connection) -> select.poll:
    """A poll object for the life of a pipe end: `Connection.poll` builds a selector on every
    call, and each side asks once per step."""
    waiting = select.poll()
    waiting.register(connection.fileno(), select.POLLIN)
    return waiting


def _core_main(
    requests: Connection,
    results: Connection,
    model_dir: str,
    config: EngineConfig,
    torch_threads: int,
    log_level: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level)
    keep_freed_memory()
    import torch

    from rainier.serve.config import ModelFormatError
    from rainier.serve.engine import LLMEngine

    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    try:
        engine = LLMEngine.from_model_dir(model_dir, config)
    except (ModelFormatError, ValueError, OSError) as exc:
        results.send(("error", str(exc)))
        return
    results.send(("ready", engine.model_config.vocab_size, engine.max_model_len, engine.stats()))

    waiting = _poller(requests)

    def receive(block: bool) -> EngineMessage | None:
        if not block and not waiting.poll(0):
            return None
        try:
            message: EngineMessage = requests.recv()
        except EOFError:
            return Shutdown()
        return message

    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        run_core(EngineCore(engine), receive, results.send)


class ProcessEngine(EngineClient):
    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        requests: Connection,
        results: Connection,
        model: ServedModel,
        metrics: ServeMetrics | None = None,
    ) -> None:
        super().__init__(model, metrics)
        self._process = process
        self._requests = requests
        self._results = results
        self._outbox: queue.SimpleQueue[EngineMessage | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="rainier-engine-io", daemon=True)
        self._results_ready = _poller(results)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead = False

    @classmethod
    def launch(cls, model_dir: Path, config: EngineConfig, torch_threads: int = 0) -> ProcessEngine:
        """Start the core and wait until its model is loaded (`EngineStartError` if it
        cannot be)."""
        HFModelConfig.from_dir(
            model_dir
        )  # a directory that is no model fails here, not in the child
        tokenizer = ModelTokenizer.from_dir(model_dir)
        defaults = GenerationDefaults.from_dir(model_dir)
        ctx = multiprocessing.get_context("spawn")
        requests_read, requests_write = ctx.Pipe(duplex=False)
        results_read, results_write = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_core_main,
            args=(
                requests_read,
                results_write,
                str(model_dir),
                config,
                torch_threads,
                logging.getLogger().level,
            ),
            name="rainier-engine-core",
            daemon=True,
        )
        process.start()
        requests_read.close()
        results_write.close()
        try:
            if not results_read.poll(STARTUP_TIMEOUT_S):
                raise EngineStartError("the engine process did not load the model in time")
            hello = results_read.recv()
        except EOFError:
            process.join(5)
            raise EngineStartError(
                f"the engine process exited with code {process.exitcode}"
            ) from None
        if hello[0] != "ready":
            process.join(5)
            raise EngineStartError(hello[1])
        _, vocab_size, max_model_len, stats = hello
        model = ServedModel(tokenizer, defaults, vocab_size, max_model_len)
        client = cls(process, requests_write, results_read, model)
        client.metrics.observe_stats(stats)
        return client

    @property
    def alive(self) -> bool:
        return not self._dead and self._process.is_alive()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._results.fileno(), self._read)
        self._writer.start()

    def stop(self) -> None:
        self._stopped = True
        self._outbox.put(Shutdown())
        self._outbox.put(None)
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)

    def _send(self, message: EngineMessage) -> None:
        self._outbox.put(message)

    def _write(self) -> None:
        """Sends from a thread, so that the event loop never blocks on a full pipe while the
        core is blocked sending it results."""
        while (message := self._outbox.get()) is not None:
            try:
                self._requests.send(message)
            except OSError:
                return

    def _read(self) -> None:
        try:
            while self._results_ready.poll(0):
                result: StepResult = self._results.recv()
                self._deliver(result)
        except (EOFError, OSError):
            assert self._loop is not None
            self._loop.remove_reader(self._results.fileno())
            self._dead = True
            self._fail_all("the engine process stopped")
