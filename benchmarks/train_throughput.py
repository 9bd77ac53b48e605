"""Training throughput of rainier's transformer: optimizer steps on random tokens, timed after
warm-up, with the same model, optimizer, autocast and MFU accounting as `python -m rainier.train`.

CPU by default (fp32, the `tiny` preset); CUDA when available (bf16 autocast, the `125m`
preset). MFU is against the flavor's datasheet peak on a known accelerator and against a
measured matmul peak on a CPU. Prints one JSON line last:
{"preset", "device", "dtype", "batch_size", "seq_len", "params", "step_ms", "tokens_per_s",
 "tflops", "peak_tflops", "peak_source", "mfu", "compile"}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from rainier.train.config import build_config
from rainier.train.metrics import peak_tflops
from rainier.train.model import Transformer, lm_loss
from rainier.train.optim import adamw


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="125m" if cuda else "tiny")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch-size", type=int, default=16 if cuda else 8)
    p.add_argument("--seq-len", type=int, default=1024 if cuda else 128)
    p.add_argument("--steps", type=int, default=20 if cuda else 10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = build_config(args.preset, args.override)
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    optimizer = adamw(model, 3e-4, 0.1, (0.9, 0.95))
    step_model = torch.compile(model) if args.compile else model
    batch = torch.randint(0, cfg.vocab_size, (args.batch_size, args.seq_len + 1), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = lm_loss(step_model(batch[:, :-1]), batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    step_s = (time.perf_counter() - started) / args.steps

    peak, source = peak_tflops(os.environ.get("RAINIER_FLAVOR"), device, dtype)
    tokens_per_s = args.batch_size * args.seq_len / step_s
    tflops = cfg.flops_per_token(args.seq_len) * tokens_per_s / 1e12
    print(
        json.dumps(
            {
                "preset": args.preset,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "dtype": str(dtype).removeprefix("torch."),
                "threads": torch.get_num_threads(),
                "batch_size": args.batch_size,
                "seq_len": args.seq_len,
                "params": cfg.n_params(),
                "step_ms": round(1000 * step_s, 2),
                "tokens_per_s": round(tokens_per_s, 1),
                "tflops": round(tflops, 4),
                "peak_tflops": round(peak, 4),
                "peak_source": source,
                "mfu": round(tflops / peak, 4),
                "compile": args.compile,
            }
        )
    )


if __name__ == "__main__":
    main()
