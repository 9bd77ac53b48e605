"""rainier's serving throughput over model size x dtype x threads, under one fixed client load.

Each configuration starts a replica (`python -m rainier.serve`, the process a deployment runs)
on a random Llama of the shape, with the dtype and torch threads given, and drives it with the
streaming client of `serve_client.py` at a fixed load: `in_flight` requests of
`prompt_len` random prompt tokens asking for exactly `output_len` tokens each (`ignore_eos`),
as vLLM's `bench serve` does with a random dataset. `rainier_tok_s` is the figure a peer
engine's benchmark (`vllm_peer.py`) compares against, on the same model directory and load.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvloop

from rainier.serve.tiny_model import build_tiny_llama

sys.path.insert(0, str(Path(__file__).parent))
from serve_client import Req, drive, summary


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int

    @property
    def intermediate(self) -> int:
        return self.hidden * 8 // 3


SHAPES = {
    "tiny": ModelShape("tiny", 256, 4, 4, 2),
    # ~100M parameters in its layers (136M with embeddings), the shape vLLM was measured on
    "100m": ModelShape("100m", 1024, 12, 16, 4),
}


@dataclass(frozen=True)
class ClientLoad:
    prompt_len: int = 128
    output_len: int = 128
    in_flight: int = 16
    requests: int = 32
    seed: int = 0


def model_dir_for(shape: ModelShape, root: Path) -> Path:
    """A random Llama of `shape` in the HF layout, built once under `root`."""
    out = root / f"llama-{shape.name}"
    if not (out / "config.json").is_file():
        build_tiny_llama(
            out,
            hidden_size=shape.hidden,
            intermediate_size=shape.intermediate,
            num_layers=shape.layers,
            num_heads=shape.heads,
            num_kv_heads=shape.kv_heads,
            max_position_embeddings=1024,
        )
    return out


@contextlib.contextmanager
def replica(model_dir: Path, dtype: str, threads: int) -> Iterator[str]:
    """The URL of a `python -m rainier.serve` replica of `model_dir`, stopped on exit."""
    command = [
        sys.executable, "-m", "rainier.serve", "--model", str(model_dir), "--port", "0",
        "--served-model-name", "bench", "--dtype", dtype, "--torch-threads", str(threads),
        "--kv-memory-mb", "512",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"the replica exited with {proc.wait()} before listening")
        yield f"http://127.0.0.1:{json.loads(line)['port']}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def requests_for(load: ClientLoad, vocab: int) -> list[Req]:
    rng = random.Random(load.seed)
    return [
        Req([rng.randrange(3, vocab) for _ in range(load.prompt_len)], load.output_len)
        for _ in range(load.requests)
    ]


def rainier_tok_s(model_dir: Path, dtype: str, threads: int, load: ClientLoad) -> float:
    """Output tokens/s of a rainier replica of `model_dir` in `dtype` on `threads` torch
    threads, under `load` (after a short untimed warm-up)."""
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    reqs = requests_for(load, vocab)
    with replica(model_dir, dtype, threads) as url:
        warm = [Req(r.prompt, 4) for r in reqs[: load.in_flight]]
        uvloop.run(drive(url, "bench", warm, concurrency=load.in_flight))
        results, wall = uvloop.run(drive(url, "bench", reqs, concurrency=load.in_flight))
    return float(summary(results, wall)["output_tok_s"])


def peer_tok_s(model_dir: Path, dtype: str, threads: int, load: ClientLoad) -> float | None:
    """vLLM's figure on the same model, requests and client, where vLLM is installed."""
    import vllm_peer

    if not vllm_peer.vllm_available():
        return None
    reqs = requests_for(load, json.loads((model_dir / "config.json").read_text())["vocab_size"])
    try:
        return vllm_peer.vllm_tokens_per_s(
            model_dir,
            vllm_peer.DTYPES[dtype],
            threads,
            [r.prompt for r in reqs],
            [r.output_len for r in reqs],
            load.in_flight,
        )
    except (RuntimeError, OSError, SystemExit) as exc:
        print(json.dumps({"vllm_peer_error": repr(exc)}), flush=True)
        return None


def measure_matrix(
    root: Path, shapes: list[str], dtypes: list[str], threads: list[int], load: ClientLoad
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for shape_name in shapes:
        model_dir = model_dir_for(SHAPES[shape_name], root)
        for dtype in dtypes:
            for count in threads:
                started = time.perf_counter()
                ours = rainier_tok_s(model_dir, dtype, count, load)
                peer = peer_tok_s(model_dir, dtype, count, load)
                row: dict[str, object] = {
                    "model": shape_name, "dtype": dtype, "threads": count,
                    "rainier_tok_s": ours, "wall_s": round(time.perf_counter() - started, 1),
                    "load": round(os.getloadavg()[0], 2),
                }  # fmt: skip
                if peer is not None:
                    row["vllm_tok_s"] = round(peer, 1)
                    row["vs_vllm"] = round(ours / peer, 2)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows
