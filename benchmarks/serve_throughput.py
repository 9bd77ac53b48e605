"""Continuous batching against one-request-at-a-time, on the same engine in the same run.

A tiny random Llama (built on the spot, nothing downloaded) gets the same set of requests
twice: all at once, so the engine batches them, and then one after another. Prints a JSON line
last: batched and sequential generated tokens per second, their ratio, and the batched run's
median time to first token and inter-token latency.

    python benchmarks/serve_throughput.py [--requests 32] [--max-tokens 64] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rainier.serve.config import EngineConfig
from rainier.serve.engine import LLMEngine
from rainier.serve.sampling import SamplingParams
from rainier.serve.tiny_model import build_tiny_llama


def run(
    engine: LLMEngine, prompts: list[list[int]], params: SamplingParams, batched: bool
) -> tuple[int, float, list[float], list[float]]:
    """(generated tokens, wall seconds, TTFTs, inter-token gaps)."""
    submitted: dict[str, float] = {}
    last: dict[str, float] = {}
    ttft: list[float] = []
    itl: list[float] = []
    generated = 0
    start = time.perf_counter()
    groups = [list(enumerate(prompts))] if batched else [[p] for p in enumerate(prompts)]
    for group in groups:
        for i, prompt in group:
            rid = f"{'b' if batched else 's'}{i}"
            engine.add_request(rid, prompt, params)
            submitted[rid] = time.perf_counter()
        while engine.has_unfinished():
            outputs = engine.step()
            now = time.perf_counter()
            for out in outputs:
                generated += len(out.token_ids)
                rid = out.request_id
                if rid in last:
                    itl.append(now - last[rid])
                else:
                    ttft.append(now - submitted[rid])
                last[rid] = now
    return generated, time.perf_counter() - start, ttft, itl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto = bfloat16 on CUDA, else float32")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads)
    dtype = args.dtype
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_llama(
            Path(tmp) / "model", hidden_size=128, intermediate_size=256, num_layers=4
        )
        engine = LLMEngine.from_model_dir(
            model_dir,
            EngineConfig(
                kv_memory_mb=64,
                max_batch_tokens=2048,
                enable_prefix_caching=False,
                device=device,
                dtype=dtype,
            ),
        )
    rng = random.Random(0)
    vocab = engine.model_config.vocab_size
    prompts = [
        [rng.randrange(3, vocab) for _ in range(rng.randint(16, 128))] for _ in range(args.requests)
    ]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    run(engine, prompts[:2], params, batched=True)

    tokens_b, wall_b, ttft, itl = run(engine, prompts, params, batched=True)
    tokens_s, wall_s, _, _ = run(engine, prompts, params, batched=False)
    batched = tokens_b / wall_b
    sequential = tokens_s / wall_s
    result = {
        "device": device,
        "dtype": dtype,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "batched_tokens_per_s": round(batched, 1),
        "sequential_tokens_per_s": round(sequential, 1),
        "speedup": round(batched / sequential, 2),
        "ttft_p50_ms": round(statistics.median(ttft) * 1000, 2),
        "itl_p50_ms": round(statistics.median(itl) * 1000, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
