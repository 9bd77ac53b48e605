"""One model on both engines behind the gateway: rainier's runtime and vLLM give the same greedy
tokens through the official `openai` client, and a vLLM replica is sandboxed, metered and
listed like rainier's own. Needs vLLM's venv (`make vllm`)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rainier.cli.client import Client
from rainier.engines.vllm_launch import VLLM_ARGS_ENV, vllm_available, vllm_python
from rainier.serve.tiny_model import build_tiny_llama

from .conftest import Cloud, ready_replicas, wait_until, written

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not vllm_available(),
        reason=f"vLLM is not installed at {vllm_python()} (make vllm, or set RAINIER_VLLM_PYTHON)",
    ),
]

# vLLM loads and compiles the model before it answers: half a minute alone, more beside others.
VLLM_READY_S = 600.0
ENGINES = {"peer-rainier": "rainier", "peer-vllm": "vllm"}
PROMPTS = ("deploy a model", "rainier snow river mountain", "the compute cloud")


@pytest.fixture(scope="module")
def peers(cloud: Cloud, acme: Client) -> Iterator[dict[str, Any]]:
    """The same registered model deployed once per engine, both in float32. vLLM's CPU
    attention wants heads of 32 or more dimensions, so this Llama has 64 (the shared one, 16).
    vLLM runs eager (no compilation at start, minutes on a busy two-core machine)."""
    previous = os.environ.get(VLLM_ARGS_ENV)
    os.environ[VLLM_ARGS_ENV] = "--enforce-eager"
    folder = cloud.server.settings.storage_dir / "acme" / "models" / "tiny-llama-hd64"
    build_tiny_llama(folder, hidden_size=128, intermediate_size=256, num_heads=2, num_kv_heads=1)
    acme.post("/api/v1/models", {"name": "tiny-hd64", "path": str(folder)})
    for name, engine in ENGINES.items():
        doc = {"kind": "Deployment", "name": name, "model": "tiny-hd64", "engine": engine}
        acme.post("/api/v1/deployments", {**doc, "dtype": "fp32", "replicas": {"min": 1}})
    try:
        found = {
            name: wait_until(ready_replicas(acme, name), VLLM_READY_S, f"{name} to be ready")
            for name in ENGINES
        }
        yield {"folder": folder, **found}
    finally:
        for name in ENGINES:
            acme.delete(f"/api/v1/deployments/{name}")
        if previous is None:
            os.environ.pop(VLLM_ARGS_ENV, None)
        else:
            os.environ[VLLM_ARGS_ENV] = previous


def token_bytes(content: list[Any]) -> list[bytes | None]:
    """Each generated token's bytes; None for a token that is not whole UTF-8 on its own, which
    vLLM reports with no bytes at all and rainier with the token's raw bytes."""
    out: list[bytes | None] = []
    for token in content:
        raw = bytes(token.bytes or b"")
        try:
            out.append(raw if raw.decode("utf-8") else None)
        except UnicodeDecodeError:
            out.append(None)
    return out


def test_both_engines_give_the_same_greedy_tokens(
    cloud: Cloud, acme: Client, peers: dict[str, Any]
) -> None:
    oai = cloud.openai(acme)
    answers: dict[str, list[list[bytes | None]]] = {}
    for name in ENGINES:
        answers[name] = []
        for prompt in PROMPTS:
            answer = oai.chat.completions.create(
                model=name,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=16,
                temperature=0,
                logprobs=True,
            )
            assert answer.model == name
            assert answer.choices[0].logprobs and answer.choices[0].logprobs.content
            assert answer.usage is not None and answer.usage.completion_tokens == 16
            answers[name].append(token_bytes(answer.choices[0].logprobs.content))
    assert answers["peer-vllm"] == answers["peer-rainier"]
    assert sum(t is not None for a in answers["peer-vllm"] for t in a) >= 24


def test_a_vllm_stream_is_metered_from_the_usage_the_gateway_asks_for(
    cloud: Cloud, acme: Client, peers: dict[str, Any]
) -> None:
    oai = cloud.openai(acme)
    raw = oai.completions.with_raw_response.create(
        model="peer-vllm", prompt="a river", max_tokens=6, temperature=0, stream=True
    )
    chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    written(cloud)
    usage = acme.get("/api/v1/deployments/peer-vllm/usage", limit=10000)["items"]
    record = next(u for u in usage if u["request_id"] == raw.headers["x-request-id"])
    assert record["output_tokens"] == 6 and record["input_tokens"] >= 2
    assert record["model"] == "tiny-hd64:1"


def test_models_list_root_and_context_length_for_vllm_tools(
    cloud: Cloud, acme: Client, peers: dict[str, Any]
) -> None:
    cards = {m.id: m.model_extra or {} for m in cloud.openai(acme).models.list()}
    for name in ENGINES:
        assert cards[name]["root"] == str(peers["folder"])
        assert cards[name]["max_model_len"] == 512
    one = cloud.openai(acme).models.retrieve("peer-vllm")
    assert (one.model_extra or {})["root"] == str(peers["folder"]) and one.owned_by == "acme"


def test_vllm_keeps_its_caches_in_the_replicas_work_folder(
    cloud: Cloud, acme: Client, peers: dict[str, Any]
) -> None:
    jobs = acme.get("/api/v1/jobs", state=["running"])["items"]
    replica = next(j for j in jobs if j["name"].startswith("peer-vllm-"))
    workdir = Path(cloud.server.settings.work_dir) / replica["id"] / "rank-0"
    assert any((workdir / ".cache" / "vllm").iterdir())


def test_vllm_bench_serve_runs_against_the_gateway_without_model_flags(
    cloud: Cloud, acme: Client, peers: dict[str, Any], tmp_path: Path
) -> None:
    """vLLM's own benchmark client finds the model and its tokenizer from `/v1/models` (`id`
    and `root`); only the key has to be given, as for any OpenAI server with auth."""
    vllm = vllm_python().parent / "vllm"
    auth = ["--header", f"Authorization=Bearer {acme.key}"]
    dataset = ["--dataset-name", "random", "--random-input-len", "8", "--random-output-len", "4"]
    done = subprocess.run(
        [
            str(vllm),
            "bench",
            "serve",
            "--base-url",
            cloud.url,
            *auth,
            *dataset,
            "--num-prompts",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OPENAI_API_KEY": acme.key or "", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"Successful requests:\s+4\b", done.stdout), done.stdout[-2000:]
