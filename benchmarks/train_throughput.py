"""Training throughput: rainier's full runtime against a bare PyTorch loop on the same model.

The runtime (`python -m rainier.train` in its own process, as a job runs it: real data from
memory-mapped shards, metrics, a checkpoint every 100 steps) and the simplest training loop
there is (same model, same batch shape, same fused AdamW and clipping, one fixed batch) run in
alternating rounds, so load from other processes on a shared machine lands on both alike.
Both use the same torch thread count (`--threads`, 1 by default: on a machine whose cores other
processes also use, a team of OpenMP threads stalls whenever one member is descheduled, and the
figures then measure the neighbours rather than the runtime). The runtime is
timed from its `start` event to its `done` event, which includes its checkpoint writes and its
final validation; the bare loop gets two untimed warm-up steps the runtime does not. The bare
loop runs with the allocator settings the runtime applies to itself (`keep_freed_memory`), so
the ratio measures the runtime's own work (data, metrics, checkpoints), not glibc's defaults.

MFU counts 6 FLOPs per matmul weight per token plus attention (`ModelShape.flops_per_token`)
against an fp32 matmul peak measured the way the runtime measures an unknown CPU, before every
round, keeping the best: a single measurement taken while a neighbour holds the core reads low
and would inflate the MFU. The 2-process DDP figure runs two `python -m rainier.train` ranks
over gloo, one thread each.

Prints one JSON line last: {"runtime_tokens_per_s", "bare_tokens_per_s", "runtime_vs_bare",
"mfu", "measured_peak_gflops", "ddp2_tokens_per_s", ...the shape and the rounds}.
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
from pathlib import Path
from typing import Any

import torch

from rainier.allocator import keep_freed_memory
from rainier.train.config import build_config
from rainier.train.data import stdlib_sample
from rainier.train.metrics import measure_matmul_tflops
from rainier.train.model import Transformer, lm_loss
from rainier.train.optim import adamw

SHAPE = {
    "dim": 256, "n_layers": 3, "n_heads": 4, "n_kv_heads": 4, "ffn_dim": 768,
    "vocab_size": 2048, "max_seq_len": 256,
}  # fmt: skip
CHECKPOINT_EVERY = 100


def overrides() -> list[str]:
    return [f"{k}={v}" for k, v in SHAPE.items()]


def train_argv(
    corpus: Path, cache: Path, ckpt: Path, steps: int, batch: int, seq: int, every: int
) -> list[str]:
    argv = ["--data", str(corpus), "--data-cache", str(cache), "--checkpoint-dir", str(ckpt)]
    argv += ["--steps", str(steps), "--batch-size", str(batch), "--seq-len", str(seq)]
    argv += ["--checkpoint-every", str(every), "--log-every", "10", "--eval-batches", "1"]
    argv += ["--preset", "tiny", "--threads", str(torch.get_num_threads())]
    for item in overrides():
        argv += ["--override", item]
    return argv


def events(lines: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for line in lines.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "event" in record:
                found[record["event"]] = record
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


def runtime_round(
    corpus: Path, cache: Path, work: Path, steps: int, batch: int, seq: int
) -> tuple[float, int]:
    """Seconds from the runtime's first step to its end, and the tokens it trained."""
    ckpt = Path(tempfile.mkdtemp(dir=work))
    seen = run_runtime(train_argv(corpus, cache, ckpt, steps, batch, seq, CHECKPOINT_EVERY))
    if steps >= CHECKPOINT_EVERY and "checkpoint" not in seen:
        raise SystemExit("the runtime wrote no checkpoint in its round")
    return seen["done"]["time"] - seen["start"]["time"], steps * batch * seq


def bare_round(steps: int, batch: int, seq: int) -> tuple[float, int]:
    """The simplest loop: the same model and optimizer on one fixed random batch."""
    cfg = build_config("tiny", overrides())
    torch.manual_seed(0)
    model = Transformer(cfg)
    optimizer = adamw(model, 3e-4, 0.1, (0.9, 0.95))
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1))

    def step() -> None:
        loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started, steps * batch * seq


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ddp2(corpus: Path, cache: Path, work: Path, steps: int, batch: int, seq: int) -> float:
    """Tokens/s of two ranks on this machine, one thread each, timed like a runtime round."""
    ckpt = Path(tempfile.mkdtemp(dir=work))
    port = str(free_port())
    argv = train_argv(corpus, cache, ckpt, steps, batch, seq, steps)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="runtime/bare pairs, alternating")
    p.add_argument("--steps", type=int, default=CHECKPOINT_EVERY, help="steps per round")
    p.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="sequences per step (default 4: 1024 tokens keep the matmuls efficient and the "
        "activations inside the last-level cache)",
    )
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--ddp-steps", type=int, default=50, help="0 skips the DDP figure")
    p.add_argument("--corpus-bytes", type=int, default=1 << 20)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the runtime, the bare loop and the peak measurement (default 1)",
    )
    args = p.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    batch, seq = args.batch_size, args.seq_len
    cfg = build_config("tiny", overrides())

    with tempfile.TemporaryDirectory(prefix="rainier-train-bench-") as tmp:
        work = Path(tmp)
        corpus = stdlib_sample(work / "corpus", args.corpus_bytes)
        cache = work / "cache"
        load_before = load()
        peak = measure_matmul_tflops(torch.device("cpu"), torch.float32)
        # Tokenize once, outside every timed round.
        runtime_round(corpus, cache, work, 1, batch, seq)
        rounds: list[dict[str, float]] = []
        for _ in range(args.rounds):
            peak = max(peak, measure_matmul_tflops(torch.device("cpu"), torch.float32))
            rt_s, rt_tokens = runtime_round(corpus, cache, work, args.steps, batch, seq)
            bare_s, bare_tokens = bare_round(args.steps, batch, seq)
            rounds.append(
                {
                    "runtime_tokens_per_s": rt_tokens / rt_s,
                    "bare_tokens_per_s": bare_tokens / bare_s,
                }
            )
            print(json.dumps({"round": len(rounds), "load": load(), **rounds[-1]}), flush=True)
        ddp = ddp2(corpus, cache, work, args.ddp_steps, batch, seq) if args.ddp_steps else None

    # Equal token counts per round, so the mean time per token is the fair aggregate.
    runtime = 1 / (sum(1 / r["runtime_tokens_per_s"] for r in rounds) / len(rounds))
    bare = 1 / (sum(1 / r["bare_tokens_per_s"] for r in rounds) / len(rounds))
    flops = cfg.flops_per_token(seq)
    print(
        json.dumps(
            {
                "runtime_tokens_per_s": round(runtime, 1),
                "bare_tokens_per_s": round(bare, 1),
                "runtime_vs_bare": round(runtime / bare, 4),
                "mfu": round(flops * runtime / (peak * 1e12), 4),
                "bare_mfu": round(flops * bare / (peak * 1e12), 4),
                "measured_peak_gflops": round(peak * 1e3, 2),
                "ddp2_tokens_per_s": round(ddp, 1) if ddp else None,
                "params": cfg.n_params(),
                "flops_per_token": flops,
                "batch_size": batch,
                "seq_len": seq,
                "steps_per_round": args.steps,
                "checkpoint_every": CHECKPOINT_EVERY,
                "rounds": args.rounds,
                "threads": torch.get_num_threads(),
                "load_before": load_before,
                "load_after": load(),
            }
        )
    )


if __name__ == "__main__":
    main()
