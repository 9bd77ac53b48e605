"""Training throughput: rainier's full runtime against a bare PyTorch loop on the same model.

The runtime (`python -m rainier.train` in its own process, as a job runs it: real data from
memory-mapped shards, metrics, checkpoints) and the simplest training loop there is (same
model, same batch shape, same fused AdamW, clipping and autocast, one fixed batch) run in
alternating rounds, so load from other processes on a shared machine lands on both alike.

Each mode is a shape x a compute dtype x a torch thread count, the runtime and the bare loop
alike: the `tiny` shape (3 layers, 256 wide) and a ~100M-parameter Llama (`100m`: 1024 wide,
12 layers, 16 query / 4 KV heads); fp32, and bf16 (autocast over fp32 master weights) where
the CPU has bf16 matrix units (AMX); one thread and every core this process may use. In bf16
the bare loop is plain autocast, which casts every weight on each forward and each weight
gradient back; the runtime computes the same step on bf16 working copies of the weights that
its optimizer step writes (`train/working_weights.py`), so it can beat the bare loop. The
runtime is timed from the metrics line of its last warm-up step to its `done` event, which
includes its checkpoint write and its final validation; the bare loop runs the same warm-up
steps untimed (their first creates oneDNN's kernels and faults in the activations' memory),
and ends, as the runtime, with the loss of one batch without gradients. The bare
loop runs with the allocator settings the runtime applies to itself (`keep_freed_memory`),
so the ratio measures the runtime's own work, not glibc's defaults.

MFU counts 6 FLOPs per matmul weight per token plus attention (`ModelShape.flops_per_token`)
against the matmul peak of the mode's dtype and threads, measured before every round, keeping
the best. The 2-process DDP figure runs two `python -m rainier.train` ranks over gloo, one
thread each, on the tiny shape.

Targets: tiny, every core >= 1.7x one thread; 100m, bf16 >= 3x fp32 on AMX; runtime/bare
>= 0.95 in each mode. On a machine other processes share, the thread figures measure the
neighbours as much as the runtime: read them with `load_before` / `load_after`.

Prints one JSON line per round, then one JSON line last: {"modes": [per-mode figures],
"tiny_fp32_threads_speedup", "100m_bf16_vs_fp32_1t", "min_runtime_vs_bare", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rainier.allocator import keep_freed_memory, release_freed_memory
from rainier.precision import cpu_has_fast_bf16, mixed_precision, resolve_dtype
from rainier.train.config import build_config
from rainier.train.data import stdlib_sample
from rainier.train.metrics import measure_matmul_tflops
from rainier.train.model import Transformer, lm_loss
from rainier.train.optim import adamw

SHAPES: dict[str, dict[str, int]] = {
    # the shape the runtime's thread and overhead targets are held on
    "tiny": {
        "dim": 256, "n_layers": 3, "n_heads": 4, "n_kv_heads": 4, "ffn_dim": 768,
        "vocab_size": 2048, "max_seq_len": 256,
    },
    # a ~100M-parameter Llama: where bf16 on matrix units pays
    "100m": {
        "dim": 1024, "n_layers": 12, "n_heads": 16, "n_kv_heads": 4, "ffn_dim": 2816,
        "vocab_size": 2048, "max_seq_len": 256,
    },
}  # fmt: skip
CHECKPOINT_EVERY = 100
TINY_WARMUP = 10  # the runtime's log interval there, as jobs run it
BIG_WARMUP = 2


@dataclass(frozen=True)
class Mode:
    """One measured configuration: a model shape, a compute dtype and a torch thread count."""

    shape: str
    dtype: str
    threads: int
    steps: int
    batch: int
    seq: int
    warmup: int = 0  # untimed steps before `steps`; the runtime logs once per warm-up

    @property
    def log_every(self) -> int:
        return self.warmup or 10

    @property
    def name(self) -> str:
        return f"{self.shape}/{self.dtype}/{self.threads}t"


def overrides(shape: str) -> list[str]:
    return [f"{k}={v}" for k, v in SHAPES[shape].items()]


def train_argv(corpus: Path, cache: Path, ckpt: Path | None, mode: Mode, every: int) -> list[str]:
    argv = ["--data", str(corpus), "--data-cache", str(cache)]
    if ckpt is not None:
        argv += ["--checkpoint-dir", str(ckpt)]
    argv += ["--steps", str(mode.warmup + mode.steps), "--batch-size", str(mode.batch)]
    argv += ["--seq-len", str(mode.seq), "--checkpoint-every", str(every)]
    argv += ["--log-every", str(mode.log_every), "--eval-batches", "1", "--preset", "tiny"]
    argv += ["--threads", str(mode.threads), "--dtype", mode.dtype]
    for item in overrides(mode.shape):
        argv += ["--override", item]
    return argv


def events(lines: str) -> dict[str, dict[str, Any]]:
    """The runtime's events by name, and its metrics lines as `step <n>`."""
    found: dict[str, dict[str, Any]] = {}
    for line in lines.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "event" in record:
                found[record["event"]] = record
            elif "step" in record:
                found[f"step {record['step']}"] = record
    return found


def run_runtime(argv: list[str], env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "rainier.train", *argv],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the runtime exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return events(out.stdout)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAINIER_")}
    return {**env, **extra}


def runtime_round(corpus: Path, cache: Path, work: Path, mode: Mode) -> tuple[float, int]:
    """Seconds from the runtime's first step to its end, and the tokens it trained. The tiny
    shape checkpoints every `CHECKPOINT_EVERY` steps, as a job does; the 100M one runs a few
    steps without a checkpoint folder, where one save (weights and AdamW's moments, 1.6 GB)
    would be most of a short round."""
    ckpt = Path(tempfile.mkdtemp(dir=work)) if mode.shape == "tiny" else None
    every = mode.warmup + mode.steps if ckpt is not None else 0
    seen = run_runtime(train_argv(corpus, cache, ckpt, mode, every))
    if mode.steps >= CHECKPOINT_EVERY and ckpt is not None and "checkpoint" not in seen:
        raise SystemExit("the runtime wrote no checkpoint in its round")
    if seen["start"]["dtype"] != mode.dtype:
        raise SystemExit(f"the runtime computed in {seen['start']['dtype']}, not {mode.dtype}")
    timed_from = seen[f"step {mode.warmup}"] if mode.warmup else seen["start"]
    return seen["done"]["time"] - timed_from["time"], mode.steps * mode.batch * mode.seq


def bare_round(mode: Mode) -> tuple[float, int]:
    """The simplest loop: the same model, optimizer and autocast on one fixed random batch,
    and at the end, as the runtime, the loss of one batch without gradients."""
    torch.set_num_threads(mode.threads)
    cfg = build_config("tiny", overrides(mode.shape))
    torch.manual_seed(0)
    model = Transformer(cfg)
    optimizer = adamw(model, 3e-4, 0.1, (0.9, 0.95))
    batch, seq, steps = mode.batch, mode.seq, mode.steps
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1))
    autocast = mixed_precision(torch.device("cpu"), resolve_dtype(mode.dtype, torch.device("cpu")))

    def step() -> None:
        with autocast:
            loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(mode.warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    with torch.no_grad(), autocast:  # the validation the runtime ends with: one batch
        lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
    return time.perf_counter() - started, steps * batch * seq


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ddp2(corpus: Path, cache: Path, work: Path, mode: Mode) -> float:
    """Tokens/s of two ranks on this machine, one thread each, timed like a runtime round."""
    ckpt = Path(tempfile.mkdtemp(dir=work))
    port = str(free_port())
    steps, batch, seq = mode.steps, mode.batch, mode.seq
    argv = train_argv(corpus, cache, ckpt, mode, steps)
    procs = []
    for rank in range(2):
        env = clean_env(
            WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
        )  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "rainier.train", *argv],
                env=env,
                stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL,
                text=True,
            )
        )
    stdout, _ = procs[0].communicate()
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"a DDP rank failed:\n{stdout}")
    seen = events(stdout)
    return 2 * steps * batch * seq / (seen["done"]["time"] - seen["start"]["time"])


def load() -> float:
    return round(os.getloadavg()[0], 2)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def measure_mode(
    corpus: Path, cache: Path, work: Path, mode: Mode, rounds: int, peak: float
) -> dict[str, Any]:
    """Runtime and bare loop in alternating rounds; the mean time per token of each."""
    torch.set_num_threads(mode.threads)
    dtype = resolve_dtype(mode.dtype, torch.device("cpu"))
    measured: list[dict[str, float]] = []
    for _ in range(rounds):
        peak = max(peak, measure_matmul_tflops(torch.device("cpu"), dtype))
        rt_s, rt_tokens = runtime_round(corpus, cache, work, mode)
        bare_s, bare_tokens = bare_round(mode)
        # Kept, the bare loop's memory (3.5 GB at 100M) slows the next runtime round, which
        # must fault in pages of its own: four times over on a virtual machine.
        release_freed_memory()
        measured.append({"runtime": rt_tokens / rt_s, "bare": bare_tokens / bare_s})
        print(json.dumps({"mode": mode.name, "load": load(), **measured[-1]}), flush=True)
    # Equal token counts per round, so the mean time per token is the fair aggregate.
    runtime = 1 / (sum(1 / r["runtime"] for r in measured) / len(measured))
    bare = 1 / (sum(1 / r["bare"] for r in measured) / len(measured))
    flops = build_config("tiny", overrides(mode.shape)).flops_per_token(mode.seq)
    return {
        "mode": mode.name,
        "runtime_tokens_per_s": round(runtime, 1),
        "bare_tokens_per_s": round(bare, 1),
        "runtime_vs_bare": round(runtime / bare, 4),
        "mfu": round(flops * runtime / (peak * 1e12 * mode.threads), 4),
        "measured_peak_gflops_per_thread": round(peak * 1e3 / mode.threads, 2),
        "batch_size": mode.batch,
        "seq_len": mode.seq,
        "steps_per_round": mode.steps,
        "rounds": rounds,
    }


def ratio(figures: dict[str, dict[str, Any]], a: str, b: str) -> float | None:
    if a == b or a not in figures or b not in figures:
        return None
    return round(figures[a]["runtime_tokens_per_s"] / figures[b]["runtime_tokens_per_s"], 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="runtime/bare pairs per mode")
    p.add_argument(
        "--steps", type=int, default=CHECKPOINT_EVERY, help="tiny: timed steps per round"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="tiny: sequences per step (default 4: 1024 tokens keep the matmuls efficient and "
        "the activations inside the last-level cache)",
    )
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument(
        "--big-steps",
        type=int,
        default=8,
        help="100m: timed steps per round",
    )
    p.add_argument(
        "--big-batch-size",
        type=int,
        default=4,
        help="100m: sequences per step (default 4: 1024 tokens, as the tiny shape's step; the "
        "optimizer's and the weight casts' fixed cost per step is then a fair share of it)",
    )
    p.add_argument("--shapes", default="tiny,100m", help="comma-separated: tiny, 100m")
    p.add_argument(
        "--dtypes",
        default="auto",
        help="comma-separated fp32, bf16; auto = fp32, and bf16 where the chip has bf16 "
        "matrix units",
    )
    p.add_argument(
        "--threads",
        default="1,all",
        help="comma-separated torch thread counts; all = the cores this process may use",
    )
    p.add_argument("--ddp-steps", type=int, default=50, help="0 skips the DDP figure")
    p.add_argument("--corpus-bytes", type=int, default=1 << 20)
    args = p.parse_args()
    keep_freed_memory()
    cores = available_cores()
    threads = sorted({cores if t == "all" else int(t) for t in args.threads.split(",")})
    dtypes = ["fp32", "bf16"] if args.dtypes == "auto" else args.dtypes.split(",")
    if args.dtypes == "auto" and not cpu_has_fast_bf16():
        dtypes = ["fp32"]
    modes = [
        Mode(shape, dtype, t, args.steps, args.batch_size, args.seq_len, TINY_WARMUP)
        if shape == "tiny"
        else Mode(shape, dtype, t, args.big_steps, args.big_batch_size, args.seq_len, BIG_WARMUP)
        for shape in args.shapes.split(",")
        for dtype in dtypes
        for t in threads
    ]

    with tempfile.TemporaryDirectory(prefix="rainier-train-bench-") as tmp:
        work = Path(tmp)
        corpus = stdlib_sample(work / "corpus", args.corpus_bytes)
        cache = work / "cache"
        load_before = load()
        # Tokenize once, outside every timed round.
        runtime_round(corpus, cache, work, Mode("tiny", "fp32", 1, 1, 1, args.seq_len))
        figures: dict[str, dict[str, Any]] = {}
        for mode in modes:
            torch.set_num_threads(mode.threads)
            dtype = resolve_dtype(mode.dtype, torch.device("cpu"))
            peak = measure_matmul_tflops(torch.device("cpu"), dtype)
            figures[mode.name] = measure_mode(corpus, cache, work, mode, args.rounds, peak)
        ddp = None
        if args.ddp_steps and "tiny" in args.shapes:
            ddp_mode = Mode("tiny", "fp32", 1, args.ddp_steps, args.batch_size, args.seq_len)
            ddp = ddp2(corpus, cache, work, ddp_mode)

    most = max(threads)
    print(
        json.dumps(
            {
                "modes": list(figures.values()),
                "tiny_fp32_threads_speedup": ratio(figures, f"tiny/fp32/{most}t", "tiny/fp32/1t"),
                "tiny_bf16_threads_speedup": ratio(figures, f"tiny/bf16/{most}t", "tiny/bf16/1t"),
                "100m_bf16_vs_fp32_1t": ratio(figures, "100m/bf16/1t", "100m/fp32/1t"),
                f"100m_bf16_vs_fp32_{most}t": ratio(
                    figures, f"100m/bf16/{most}t", f"100m/fp32/{most}t"
                ),
                "min_runtime_vs_bare": min(f["runtime_vs_bare"] for f in figures.values()),
                "ddp2_tokens_per_s": round(ddp, 1) if ddp else None,
                "cpu_bf16_matrix_units": cpu_has_fast_bf16(),
                "cores": cores,
                "load_before": load_before,
                "load_after": load(),
            }
        )
    )


if __name__ == "__main__":
    main()
