"""A real `python -m rainier.serve` process, driven with the official `openai` client."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from rainier.serve.config import EngineConfig
from rainier.serve.engine import LLMEngine
from rainier.serve.sampling import SamplingParams

MODEL = "tiny"
STARTUP_DEADLINE_S = 180.0


class ServerProcess:
    def __init__(self, model_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rainier.serve",
                "--model",
                str(model_dir),
                "--port",
                "0",
                "--served-model-name",
                MODEL,
                "--kv-memory-mb",
                "1",
                "--block-size",
                "8",
                "--torch-threads",
                "1",
                "--dtype",
                "fp32",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        self.announcement: dict[str, object] = {}
        while not self.announcement:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise TimeoutError("the server never announced its port")
            line = lines.get(timeout=remaining)
            if line is None:
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"the server exited before listening:\n{stderr}")
            self.announcement = json.loads(line)
        self.port = int(str(self.announcement["port"]))
        self.base_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tiny_model_dir)
    try:
        assert httpx.get(proc.base_url + "/health", timeout=30).status_code == 200
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def local_engine(tiny_model_dir: Path) -> LLMEngine:
    return LLMEngine.from_model_dir(tiny_model_dir, EngineConfig(kv_memory_mb=1, block_size=8))


def greedy_locally(engine: LLMEngine, prompt_ids: list[int], max_tokens: int) -> str:
    engine.add_request("local", prompt_ids, SamplingParams(max_tokens=max_tokens, temperature=0))
    text = ""
    while engine.has_unfinished():
        text += "".join(o.text for o in engine.step())
    return text


def test_announces_port_and_lists_the_model(server: ServerProcess, client: openai.OpenAI) -> None:
    assert server.announcement["event"] == "listening"
    assert server.port > 0
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_plain_completion_matches_the_engine(
    client: openai.OpenAI, local_engine: LLMEngine
) -> None:
    prompt = "the compute cloud"
    got = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
    prompt_ids = local_engine.tokenizer.encode(prompt)
    assert got.choices[0].text == greedy_locally(local_engine, prompt_ids, 10)
    assert got.usage is not None
    assert got.usage.prompt_tokens == len(prompt_ids)
    assert 1 <= got.usage.completion_tokens <= 10
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens
    assert got.choices[0].finish_reason in ("stop", "length")


def test_streaming_with_usage_equals_the_plain_answer(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL, "prompt": "river mountain", "max_tokens": 12, "temperature": 0.0}
    plain = client.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(
        client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
    )
    assert len(chunks) >= 3
    *content, last = chunks
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in content)
    assert "".join(c.choices[0].text for c in content) == plain.choices[0].text
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert content[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_chat_completion_uses_the_template(client: openai.OpenAI, local_engine: LLMEngine) -> None:
    messages = [{"role": "user", "content": "hello rainier"}]
    got = client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
    )
    tok = local_engine.tokenizer
    expected_prompt = "<s><|user|>\nhello rainier</s>\n<|assistant|>\n"
    prompt_ids = tok.encode(expected_prompt, add_special_tokens=False)
    assert got.usage is not None and got.usage.prompt_tokens == len(prompt_ids)
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == greedy_locally(local_engine, prompt_ids, 8)

    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == got.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == got.usage.completion_tokens


def test_n_choices(client: openai.OpenAI) -> None:
    got = client.completions.create(
        model=MODEL, prompt="one two", max_tokens=6, n=3, temperature=1.0, seed=11
    )
    assert sorted(c.index for c in got.choices) == [0, 1, 2]
    assert got.usage is not None
    assert got.usage.completion_tokens >= 3
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        n=2,
        temperature=1.0,
    )
    assert sorted(c.index for c in chat.choices) == [0, 1]


def test_seed_is_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        got = client.completions.create(
            model=MODEL, prompt="the snow", max_tokens=12, temperature=1.0, seed=seed
        )
        return got.choices[0].text

    assert sample(42) == sample(42)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def test_stop_strings(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL, prompt="forest", max_tokens=24, temperature=0)
    text = free.choices[0].text
    assert len(text) > 6, "the tiny model should say something"
    stop = text[3:6]
    got = client.completions.create(
        model=MODEL, prompt="forest", max_tokens=24, temperature=0, stop=[stop]
    )
    assert got.choices[0].text == text[: text.index(stop)]
    assert got.choices[0].finish_reason == "stop"


def test_errors_have_openai_shape(server: ServerProcess, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    assert not_found.value.status_code == 404
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=MODEL, prompt=[5] * 600, max_tokens=2)
    assert too_long.value.status_code == 400
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as bad_temperature:
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, temperature=7)
    assert bad_temperature.value.param == "temperature"

    for body, param in (
        ({"model": MODEL, "prompt": "x", "n": 0}, "n"),
        ({"model": MODEL, "prompt": "x", "top_p": 0}, "top_p"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "prompt": "x", "logit_bias": {"5": 10}}, "logit_bias"),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_object"},
            },
            "response_format",
        ),
    ):
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        response = httpx.post(server.base_url + path, json=body, timeout=30)
        assert response.status_code == 400
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == param


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_client_disconnect_aborts_the_request(server: ServerProcess) -> None:
    before = _metric(
        httpx.get(server.base_url + "/metrics").text,
        'rainier_serve_requests_finished_total{finish_reason="abort"}',
    )
    body = {
        "model": MODEL,
        "prompt": "hello",
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", server.base_url + "/v1/completions", json=body) as response,
    ):
        lines = response.iter_lines()
        received = [line for _, line in zip(range(4), lines, strict=False)]
    assert any(line.startswith("data: ") for line in received)
    deadline = time.monotonic() + 30
    while True:
        metrics = httpx.get(server.base_url + "/metrics").text
        aborted = _metric(metrics, 'rainier_serve_requests_finished_total{finish_reason="abort"}')
        load = httpx.get(server.base_url + "/load").json()
        if aborted > before and load == {"running": 0, "waiting": 0}:
            break
        assert time.monotonic() < deadline, "the request was not aborted"
        time.sleep(0.05)
    generated = _metric(metrics, "rainier_serve_generation_tokens_total")
    assert generated > 0


def test_metrics_and_load(server: ServerProcess, client: openai.OpenAI) -> None:
    client.completions.create(model=MODEL, prompt="metrics please", max_tokens=5, temperature=0)
    text = httpx.get(server.base_url + "/metrics").text
    for name in (
        "rainier_serve_requests_running",
        "rainier_serve_requests_waiting",
        "rainier_serve_kv_blocks_used",
        "rainier_serve_time_to_first_token_seconds_count",
        "rainier_serve_inter_token_latency_seconds_count",
        "rainier_serve_prompt_tokens_total",
        "rainier_serve_generation_tokens_total",
    ):
        assert name in text
    assert _metric(text, "rainier_serve_time_to_first_token_seconds_count") >= 1
    assert _metric(text, "rainier_serve_prompt_tokens_total") >= 3
    load = httpx.get(server.base_url + "/load").json()
    assert set(load) == {"running", "waiting"}


def test_metrics_under_vllm_names(server: ServerProcess, client: openai.OpenAI) -> None:
    """vLLM's dashboards select these names with a `model_name` label; the values are the
    replica's own, so the two names of one measure always agree."""
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        text = httpx.get(server.base_url + "/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                out.setdefault(sample.name, {})[key] = sample.value
        return out

    before = scrape()
    client.completions.create(model=MODEL, prompt="vllm names", max_tokens=5, temperature=0)
    after = scrape()
    label = (("model_name", MODEL),)
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:gpu_cache_usage_perc",
        "vllm:time_to_first_token_seconds_count",
        "vllm:time_per_output_token_seconds_count",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
    ):
        assert label in after[name], name
    assert 0.0 <= after["vllm:gpu_cache_usage_perc"][label] <= 1.0
    for count in (
        "vllm:time_to_first_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
    ):
        assert after[count][label] == before.get(count, {}).get(label, 0) + 1, count
    assert (
        after["vllm:prompt_tokens_total"][label]
        == after["rainier_serve_prompt_tokens_total"][()]
        > before["vllm:prompt_tokens_total"][label]
    )
    assert (
        after["vllm:generation_tokens_total"][label]
        == after["rainier_serve_generation_tokens_total"][()]
    )
    finished = after["vllm:request_success_total"]
    assert sum(v for k, v in finished.items() if dict(k)["finished_reason"] == "length") >= 1


def test_logprobs_echo_and_several_prompts(server: ServerProcess, client: openai.OpenAI) -> None:
    got = client.completions.create(
        model=MODEL, prompt=["hello", "the river"], max_tokens=4, temperature=0, logprobs=3
    )
    assert sorted(c.index for c in got.choices) == [0, 1]
    for choice in got.choices:
        lp = choice.logprobs
        assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
        for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
            assert chosen is not None and chosen <= 0.0
            assert top is not None and len(top) <= 3
            assert chosen == pytest.approx(max(top.values()), abs=1e-5)
    echoed = client.completions.create(
        model=MODEL, prompt="the river", max_tokens=4, temperature=0, echo=True
    )
    assert echoed.choices[0].text == "the river" + got.choices[1].text
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        logprobs=True,
        top_logprobs=2,
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == chat.usage.completion_tokens  # type: ignore[union-attr]
    assert all(len(t.top_logprobs) == 2 for t in content)
    health = httpx.get(server.base_url + "/health").json()
    assert health["status"] == "ok"
    assert health["running"] >= 0 and health["waiting"] >= 0


def test_concurrent_streams_match_one_at_a_time(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    prompts = [f"{w} the model" for w in ("hello", "river", "snow", "one two", "cloud", "42")]
    one_at_a_time = [
        client.completions.create(model=MODEL, prompt=p, max_tokens=16, temperature=0)
        .choices[0]
        .text
        for p in prompts
    ]

    async def stream_all() -> list[str]:
        async_client = openai.AsyncOpenAI(
            base_url=server.base_url + "/v1", api_key="unused", max_retries=0
        )

        async def one(prompt: str) -> str:
            stream = await async_client.completions.create(
                model=MODEL, prompt=prompt, max_tokens=16, temperature=0, stream=True
            )
            return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])

        try:
            return list(await asyncio.gather(*(one(p) for p in prompts)))
        finally:
            await async_client.close()

    assert asyncio.run(stream_all()) == one_at_a_time
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other")


def test_preemption_under_load_fails_no_request(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    metrics_url = server.base_url + "/metrics"
    before = _metric(httpx.get(metrics_url).text, "rainier_serve_preemptions_total")
    prompts = [f"request {i} about the river" for i in range(24)]
    extra = {"ignore_eos": True}
    # The pool holds 2048 tokens (1 MiB at 512 bytes a token). At 400 tokens each, five
    # sequences at once overflow it, however far apart the client's requests arrive: at 100,
    # it took seventeen, and on a busy machine the first answers were done before the last
    # requests came.
    output = 400

    async def run_all() -> list[tuple[str, int]]:
        async_client = openai.AsyncOpenAI(
            base_url=server.base_url + "/v1", api_key="unused", max_retries=0
        )

        async def one(prompt: str) -> tuple[str, int]:
            stream = await async_client.completions.create(
                model=MODEL,
                prompt=prompt,
                max_tokens=output,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=extra,
            )
            text, tokens = "", 0
            async for chunk in stream:
                text += "".join(c.text for c in chunk.choices)
                tokens = chunk.usage.completion_tokens if chunk.usage else tokens
            return text, tokens

        try:
            return list(await asyncio.gather(*(one(p) for p in prompts)))
        finally:
            await async_client.close()

    results = asyncio.run(run_all())
    assert all(tokens == output for _, tokens in results)
    after = httpx.get(metrics_url).text
    assert _metric(after, "rainier_serve_preemptions_total") > before
    assert _metric(after, "rainier_serve_kv_blocks_used") == 0
    alone = client.completions.create(
        model=MODEL, prompt=prompts[-1], max_tokens=output, temperature=0, extra_body=extra
    )
    assert results[-1][0] == alone.choices[0].text
