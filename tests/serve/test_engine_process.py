"""The engine core in its own process: same tokens as in-process, and no request left waiting
when that process dies."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from rainier.serve.async_engine import EngineFailure, Sink
from rainier.serve.config import EngineConfig
from rainier.serve.engine import LLMEngine
from rainier.serve.engine_process import ProcessEngine
from rainier.serve.sampling import SamplingParams
from rainier.serve.sequence import RequestOutput


async def _collect(sink: Sink) -> tuple[list[int], RequestOutput | EngineFailure]:
    tokens: list[int] = []
    while True:
        item = await sink.get()
        if isinstance(item, EngineFailure):
            return tokens, item
        tokens.extend(item.token_ids)
        if item.finished:
            return tokens, item


def test_process_engine_matches_in_process_and_fails_cleanly_when_killed(
    tiny_model_dir: Path,
) -> None:
    config = EngineConfig(kv_memory_mb=4, block_size=8)
    local = LLMEngine.from_model_dir(tiny_model_dir, config)
    prompts = [[0, 5, 6, 7], [0, 9, 10, 11, 12, 13], [0, 42]]
    greedy = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        local.add_request(f"r{i}", prompt, greedy)
    expected: dict[str, list[int]] = {f"r{i}": [] for i in range(len(prompts))}
    while local.has_unfinished():
        for out in local.step():
            expected[out.request_id].extend(out.token_ids)

    client = ProcessEngine.launch(tiny_model_dir, config, torch_threads=1)

    async def scenario() -> None:
        client.start()
        sinks: dict[str, Sink] = {}
        for i, prompt in enumerate(prompts):
            sinks[f"r{i}"] = asyncio.Queue()
            client.submit(f"r{i}", prompt, greedy, sinks[f"r{i}"])
        got = await asyncio.wait_for(
            asyncio.gather(*(_collect(s) for s in sinks.values())), timeout=60
        )
        assert {rid: tokens for rid, (tokens, _) in zip(sinks, got, strict=True)} == expected
        assert all(isinstance(last, RequestOutput) for _, last in got)
        assert client.load() == {"running": 0, "waiting": 0}

        refused: Sink = asyncio.Queue()
        client.submit("too-long", [5] * 10_000, greedy, refused)
        _, failure = await asyncio.wait_for(_collect(refused), timeout=30)
        assert isinstance(failure, EngineFailure) and failure.client_error

        endless: Sink = asyncio.Queue()
        long_run = SamplingParams(
            max_tokens=client.max_model_len - 2, temperature=0.0, ignore_eos=True
        )
        client.submit("endless", [0, 5], long_run, endless)
        first = await asyncio.wait_for(endless.get(), timeout=30)
        assert isinstance(first, RequestOutput) and not first.finished
        pid = client._process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _, end = await asyncio.wait_for(_collect(endless), timeout=30)
        assert isinstance(end, EngineFailure) and not end.client_error
        assert not client.alive
        late: Sink = asyncio.Queue()
        client.submit("late", [0, 5], greedy, late)
        assert isinstance(late.get_nowait(), EngineFailure)

    try:
        asyncio.run(scenario())
    finally:
        client.stop()


def test_a_burst_larger_than_the_pipe_holds_is_answered_in_full(tiny_model_dir: Path) -> None:
    """Refused prompts far larger than a pipe's buffer, sent at once: none is lost or stuck
    behind another, and a small request after them is still served."""
    client = ProcessEngine.launch(tiny_model_dir, EngineConfig(kv_memory_mb=4), torch_threads=1)

    async def scenario() -> None:
        client.start()
        sinks: list[Sink] = []
        greedy = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
        for i in range(40):
            sinks.append(asyncio.Queue())
            client.submit(f"big{i}", [7] * 20_000, greedy, sinks[-1])  # ~40 KiB pickled each
        client.submit("small", [0, 5, 6], greedy, small := asyncio.Queue())
        ends = await asyncio.wait_for(asyncio.gather(*(_collect(s) for s in sinks)), timeout=60)
        assert all(isinstance(end, EngineFailure) and end.client_error for _, end in ends)
        tokens, last = await asyncio.wait_for(_collect(small), timeout=60)
        assert isinstance(last, RequestOutput) and len(tokens) == 2

    try:
        asyncio.run(scenario())
    finally:
        client.stop()
