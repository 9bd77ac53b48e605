"""rainier's serving runtime beside vLLM on the same model, client and requests.

For each configuration (model size x dtype x CPU threads) one set of random weights is built on
the spot (nothing downloaded), then rainier's replica (`python -m rainier.serve`) and vLLM (as
rainier starts it for `engine: vllm`: `python -m rainier.engines.vllm_replica`) serve it in
turn, each alone on the machine, and the same requests go to each with serve_throughput.py's
client: streamed completions of token-id prompts, `ignore_eos`, at most `--concurrency` in
flight, after a warm-up round. `vs_vllm` is rainier's output tokens/s over vLLM's, measured in
the same run. One JSON line per configuration; vLLM must be installed (`make vllm`, or
`RAINIER_VLLM_PYTHON`), else one line saying it was skipped.

    python benchmarks/vllm_peer.py [--configs tiny:fp32:1,tiny:bf16:2] [--requests 64]

`vllm_tokens_per_s(...)` is what other benchmarks call for vLLM's figure on their own model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvloop

from rainier.engines.vllm_launch import REPLICA_MODULE, vllm_available, vllm_python
from rainier.serve.tiny_model import build_tiny_llama

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
# (hidden, layers, heads, kv heads): serve_throughput.py's default model, and serve_matrix.py's
# ~100M Llama.
MODELS = {"tiny": (256, 4, 4, 2), "100m": (1024, 12, 16, 4)}
SERVED_NAME = "peer"
READY_S = 900.0


def announced_port(log_path: Path, offset: int) -> tuple[int | None, int]:
    """The port of the newest `{"event": "listening"}` line a replica printed after `offset`
    in its log, and the offset up to which whole lines were read."""
    try:
        data = log_path.read_bytes()[offset:]
    except FileNotFoundError:
        return None, offset
    end = data.rfind(b"\n") + 1
    port = None
    for line in data[:end].splitlines():
        text = line.strip()
        if text.startswith(b"{") and b'"listening"' in text:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                event = json.loads(text)
                if event.get("event") == "listening":
                    port = int(event["port"])
    return port, offset + end


@contextlib.contextmanager
def replica(argv: list[str], log_path: Path) -> Iterator[str]:
    """Runs a replica command until the `with` ends; yields its URL once it has announced its
    port (rainier's replicas once they listen, vLLM's wrapper once vLLM is healthy)."""
    start = log_path.stat().st_size if log_path.exists() else 0
    # vLLM's caches go to the replica's work folder: beside the log, not the current folder
    env = {**os.environ, "RAINIER_WORKDIR": str(log_path.parent)}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + READY_S
        port = None
        while port is None:
            if proc.poll() is not None:
                raise SystemExit(f"{argv[2]} exited with {proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{argv[2]} did not come up in {READY_S} s; see {log_path}")
            time.sleep(0.5)
            port, _ = announced_port(log_path, start)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rainier_argv(model_dir: Path, dtype: str, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rainier.serve",
        "--model",
        str(model_dir),
        "--port",
        "0",
        "--served-model-name",
        SERVED_NAME,
        "--dtype",
        dtype,
        "--torch-threads",
        str(threads),
    ]


def vllm_argv(model_dir: Path, dtype: str, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        REPLICA_MODULE,
        "--vllm-python",
        str(vllm_python()),
        "--model",
        str(model_dir),
        "--served-model-name",
        SERVED_NAME,
        "--dtype",
        dtype,
        "--threads",
        str(threads),
    ]


def output_tokens_per_s(
    url: str, prompts: Sequence[list[int]], max_tokens: Sequence[int], concurrency: int
) -> float:
    """Output tokens/s of the requests at `concurrency` in flight, after one warm-up round of
    the first `concurrency` of them (vLLM compiles for the batch shapes it meets first)."""
    from serve_throughput import Req, drive, summary

    reqs = [Req(list(p), m) for p, m in zip(prompts, max_tokens, strict=True)]
    uvloop.run(drive(url, SERVED_NAME, reqs[:concurrency], concurrency=concurrency))
    results, wall = uvloop.run(drive(url, SERVED_NAME, reqs, concurrency=concurrency))
    return summary(results, wall)["output_tok_s"]


def _lengths(max_tokens: Sequence[int] | int, count: int) -> list[int]:
    return [max_tokens] * count if isinstance(max_tokens, int) else list(max_tokens)


def vllm_tokens_per_s(
    model_dir: Path,
    dtype: str,
    threads: int,
    prompts: Sequence[list[int]],
    max_tokens: Sequence[int] | int,
    concurrency: int,
    log_path: Path | None = None,
) -> float:
    """vLLM's output tokens/s on `model_dir` (a Hugging Face folder), `dtype` float32 or
    bfloat16, `threads` CPU cores, for token-id `prompts` each asking for its `max_tokens`
    (ignoring EOS), at most `concurrency` in flight. Raises RuntimeError without vLLM."""
    if not vllm_available():
        raise RuntimeError(f"vLLM is not installed at {vllm_python()} (make vllm)")
    log = log_path or Path(tempfile.mkdtemp()) / "vllm.log"
    with replica(vllm_argv(model_dir, dtype, threads), log) as url:
        lengths = _lengths(max_tokens, len(prompts))
        return output_tokens_per_s(url, prompts, lengths, concurrency)


def rainier_tokens_per_s(
    model_dir: Path,
    dtype: str,
    threads: int,
    prompts: Sequence[list[int]],
    max_tokens: Sequence[int] | int,
    concurrency: int,
    log_path: Path,
) -> float:
    with replica(rainier_argv(model_dir, dtype, threads), log_path) as url:
        lengths = _lengths(max_tokens, len(prompts))
        return output_tokens_per_s(url, prompts, lengths, concurrency)


def build_model(folder: Path, size: str) -> Path:
    hidden, layers, heads, kv_heads = MODELS[size]
    return build_tiny_llama(
        folder,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        max_position_embeddings=1024,
    )


def requests(count: int, vocab: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """serve_throughput.py's request distribution (log-normal prompts, exponential outputs)."""
    from serve_throughput import dataset

    shape = argparse.Namespace(prompt_median=48, prompt_max=256, output_mean=48, output_max=256)
    reqs = dataset(count, seed, vocab, shape)
    return [r.prompt for r in reqs], [r.output_len for r in reqs]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--configs",
        default="tiny:fp32:1,tiny:fp32:2,tiny:bf16:1,tiny:bf16:2",
        help="comma-separated model:dtype:threads, model in "
        + ", ".join(MODELS)
        + ", dtype in "
        + ", ".join(DTYPES),
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not vllm_available():
        print(json.dumps({"bench": "vllm_peer", "skipped": f"no vLLM at {vllm_python()}"}))
        return
    configs = [c.split(":") for c in args.configs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        models: dict[str, Path] = {}
        for size, dtype, threads_text in configs:
            if size not in models:
                models[size] = build_model(Path(tmp) / size, size)
            vocab = json.loads((models[size] / "config.json").read_text())["vocab_size"]
            prompts, lengths = requests(args.requests, vocab, args.seed)
            threads, load_before = int(threads_text), os.getloadavg()[0]
            common = (models[size], DTYPES[dtype], threads, prompts, lengths, args.concurrency)
            ours = rainier_tokens_per_s(*common, log_path=Path(tmp) / "rainier.log")
            theirs = vllm_tokens_per_s(*common, log_path=Path(tmp) / "vllm.log")
            line = {
                "bench": "vllm_peer",
                "model": size,
                "dtype": dtype,
                "threads": threads,
                "requests": args.requests,
                "concurrency": args.concurrency,
                "rainier_output_tok_s": ours,
                "vllm_output_tok_s": theirs,
                "vs_vllm": round(ours / theirs, 3),
                "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
