"""`python -m rainier.train`: arguments are checked before torch is imported, so a typo costs
a fraction of a second and exits with code 2 and the argument's name."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rainier.train.config import PRESETS, build_config

DESCRIPTION = """\
Train a Llama-style decoder-only transformer on your own text, from scratch.

A byte-level BPE tokenizer is trained on the corpus, the corpus is tokenized once into
memory-mapped shards (cached by a fingerprint of the inputs), and the model trains with AdamW,
warmup + cosine decay, gradient clipping and accumulation; bf16 autocast on GPUs, fp32 on CPUs;
DistributedDataParallel when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPUs), launched by rainier's
executors or torchrun.
"""

EPILOG = """\
presets:
{presets}

checkpoints:
  Written every --checkpoint-every steps, on SIGTERM and at the end, atomically; the newest
  --keep are kept. A run started with a checkpoint folder that holds checkpoints resumes from
  the newest whole one, and continues with exactly the batches it would have seen. Rank 0
  writes them: with several nodes the folder must be storage they all share, or give
  --checkpoint-url: each checkpoint is then also uploaded there (manifest last), and a run
  whose folder holds nothing newer resumes from the newest one uploaded whole.

metrics:
  JSON lines on stdout and in --metrics-file (default CHECKPOINT_DIR/metrics.jsonl): loss,
  val_loss, lr, grad_norm, tokens_per_s, step_ms, mfu. With RAINIER_CONTROL_URL set, rank 0 also
  POSTs them to the control plane (best effort).

environment:
  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT   torch.distributed
  RAINIER_RANK, RAINIER_WORLD_SIZE   used when the standard ones are absent
  RAINIER_CHECKPOINT_DIR             default of --checkpoint-dir
  RAINIER_CHECKPOINT_URL, RAINIER_EXPORT_URL   defaults of --checkpoint-url, --export-url
  RAINIER_STORAGE_ENDPOINT_URL, RAINIER_STORAGE_REGION, RAINIER_STORAGE_KEY_ID,
  RAINIER_STORAGE_SECRET_KEY         how s3:// URLs are reached (an S3-compatible server)
  RAINIER_FLAVOR                     the accelerator, for the MFU's peak (cpu: measured)
  RAINIER_CONTROL_URL, RAINIER_TOKEN, RAINIER_JOB_ID, RAINIER_JOB_NAME   metrics + registration
  RAINIER_CHIPS                      on the cpu flavor: cores granted, the default of --threads
  RAINIER_TENANT, RAINIER_NODE, RAINIER_ATTEMPT   recorded in the start line
  RAINIER_HOME                       data cache root when there is no checkpoint folder

exit codes:
  0  finished, or stopped by SIGTERM (preemption) / Ctrl-C after saving a checkpoint
  2  bad arguments, data or checkpoint folder (the message names the argument)
  3  diverged: gradients stopped being finite; no checkpoint was written after that
  1  anything else

example:
  python -m rainier.train --data notes/ 'papers/**/*.md' --preset 10m --steps 2000 \\
      --batch-size 16 --seq-len 512 --checkpoint-dir runs/a --checkpoint-every 200 --export out/a
"""


def _number(kind: Callable[[str], float | int], low: float, what: str) -> Callable[[str], object]:
    def parse(raw: str) -> object:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not {what}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{raw!r} is not {what}")
        return value

    return parse


positive = _number(int, 1, "a positive integer")
natural = _number(int, 0, "an integer >= 0")
positive_float = _number(float, 1e-300, "a positive number")
nonneg_float = _number(float, 0, "a number >= 0")


def fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not in [0, 1)")
    return value


def build_parser() -> argparse.ArgumentParser:
    presets = "\n".join(
        f"  {name:<5} {cfg.n_params() / 1e6:8.2f}M params  dim={cfg.dim} layers={cfg.n_layers} "
        f"heads={cfg.n_heads}/{cfg.n_kv_heads} ffn={cfg.ffn_dim} vocab={cfg.vocab_size} "
        f"max_seq_len={cfg.max_seq_len}"
        for name, cfg in PRESETS.items()
    )
    p = argparse.ArgumentParser(
        prog="python -m rainier.train",
        description=DESCRIPTION,
        epilog=EPILOG.format(presets=presets),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="PATH",
        help="text files, folders or globs (.txt .md .py .jsonl), or storage URLs "
        "(s3://bucket/prefix/, file:///path), fetched into this node's cache",
    )
    g.add_argument(
        "--text-field",
        metavar="NAME",
        default="text",
        help="field of .jsonl records (default: text)",
    )
    g.add_argument(
        "--val-fraction",
        metavar="X",
        type=fraction,
        default=0.01,
        help="tail of the token stream held out for validation (default: 0.01)",
    )
    g.add_argument(
        "--data-cache",
        metavar="DIR",
        type=Path,
        help="where tokenized shards go (default: CHECKPOINT_DIR/data)",
    )

    g = p.add_argument_group("model")
    g.add_argument("--preset", default="tiny", choices=list(PRESETS), help="(default: tiny)")
    g.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one config field, e.g. n_layers=4; repeatable",
    )

    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--steps", metavar="N", type=positive, required=True, help="optimizer steps in all"
    )
    g.add_argument(
        "--batch-size",
        metavar="N",
        type=positive,
        default=8,
        help="sequences per rank per step (default: 8)",
    )
    g.add_argument(
        "--grad-accum",
        metavar="N",
        type=positive,
        default=1,
        help="micro-batches --batch-size is split into (default: 1)",
    )
    g.add_argument(
        "--seq-len",
        metavar="N",
        type=positive,
        default=256,
        help="tokens per sequence (default: 256)",
    )
    g.add_argument(
        "--lr",
        metavar="X",
        type=positive_float,
        default=3e-4,
        help="peak learning rate (default: 3e-4)",
    )
    g.add_argument(
        "--min-lr-ratio",
        metavar="X",
        type=fraction,
        default=0.1,
        help="final lr as a fraction of --lr (default: 0.1)",
    )
    g.add_argument("--warmup-steps", metavar="N", type=natural, help="(default: 5%% of --steps)")
    g.add_argument(
        "--weight-decay", metavar="X", type=nonneg_float, default=0.1, help="(default: 0.1)"
    )
    g.add_argument(
        "--grad-clip",
        metavar="X",
        type=nonneg_float,
        default=1.0,
        help="max global grad norm, 0 = off (default: 1.0)",
    )
    g.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=0,
        help="initial weights and batch order (default: 0)",
    )

    g = p.add_argument_group("checkpoints and output")
    g.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        type=Path,
        help="where checkpoints go and resume comes from (default: $RAINIER_CHECKPOINT_DIR)",
    )
    g.add_argument(
        "--checkpoint-every",
        metavar="N",
        type=natural,
        default=0,
        help="steps between checkpoints, 0 = only on stop and at the end (default: 0)",
    )
    g.add_argument(
        "--keep", metavar="N", type=positive, default=3, help="checkpoints kept (default: 3)"
    )
    g.add_argument(
        "--export",
        type=Path,
        metavar="DIR",
        help="write a Hugging Face Llama model folder here at the end",
    )
    g.add_argument(
        "--checkpoint-url",
        metavar="URL",
        default=os.environ.get("RAINIER_CHECKPOINT_URL") or None,
        help="storage URL each checkpoint is uploaded to and resumed from "
        "(default: $RAINIER_CHECKPOINT_URL)",
    )
    g.add_argument(
        "--export-url",
        metavar="URL",
        default=os.environ.get("RAINIER_EXPORT_URL") or None,
        help="storage URL the --export folder is uploaded to and registered as "
        "(default: $RAINIER_EXPORT_URL)",
    )
    g.add_argument(
        "--model-name", metavar="NAME", help="name to register the export under (default: job name)"
    )
    g.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="do not register the export with the control plane",
    )
    g.add_argument(
        "--metrics-file",
        metavar="FILE",
        type=Path,
        help="JSON lines (default: CHECKPOINT_DIR/metrics.jsonl)",
    )
    g.add_argument(
        "--log-every",
        metavar="N",
        type=positive,
        default=10,
        help="steps between metric lines (default: 10)",
    )
    g.add_argument(
        "--eval-every",
        metavar="N",
        type=natural,
        default=0,
        help="steps between validations, 0 = only at the end (default: 0)",
    )
    g.add_argument(
        "--eval-batches",
        metavar="N",
        type=positive,
        default=8,
        help="validation batches of --batch-size per rank (default: 8)",
    )

    g = p.add_argument_group("runtime")
    g.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: auto)"
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument(
        "--threads",
        metavar="N",
        type=positive,
        help="CPU threads per process (default: on the cpu flavor, RAINIER_CHIPS / "
        "LOCAL_WORLD_SIZE; otherwise torch's, split between local ranks)",
    )
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        cfg = build_config(ns.preset, ns.override)
    except ValueError as exc:
        parser.error(f"argument --override: {exc}")
    if ns.batch_size % ns.grad_accum:
        parser.error(
            f"argument --grad-accum: {ns.grad_accum} does not divide --batch-size {ns.batch_size}"
        )
    if ns.seq_len > cfg.max_seq_len:
        parser.error(
            f"argument --seq-len: {ns.seq_len} exceeds the model's max_seq_len {cfg.max_seq_len}; "
            f"add --override max_seq_len={ns.seq_len}"
        )

    from rainier.storage.cache import default_cache_dir
    from rainier.storage.location import StorageUrlError, normalize
    from rainier.train.data import DataError, find_files
    from rainier.train.env import RunEnv
    from rainier.train.inputs import local_inputs

    for flag, url in (("--checkpoint-url", ns.checkpoint_url), ("--export-url", ns.export_url)):
        try:
            if url is not None:
                normalize(url)
        except StorageUrlError as exc:
            parser.error(f"argument {flag}: {exc}")
    try:
        data_paths = local_inputs(ns.data, default_cache_dir())
        find_files(data_paths)
    except (DataError, ValueError) as exc:
        parser.error(f"argument --data: {exc}")
    try:
        env = RunEnv.from_environ()
    except ValueError as exc:
        parser.error(f"environment: {exc}")
    checkpoint_dir = ns.checkpoint_dir or (Path(env.checkpoint_dir) if env.checkpoint_dir else None)
    if ns.checkpoint_every and checkpoint_dir is None:
        parser.error(
            "argument --checkpoint-every: needs --checkpoint-dir or RAINIER_CHECKPOINT_DIR"
        )
    if ns.checkpoint_url and checkpoint_dir is None:
        parser.error("argument --checkpoint-url: needs --checkpoint-dir or RAINIER_CHECKPOINT_DIR")
    if ns.export_url and ns.export is None:
        parser.error("argument --export-url: needs --export, the folder it is written in first")

    from rainier.train.loop import EXIT_USAGE, TrainArgs, UsageError, train

    args = TrainArgs(
        data=data_paths,
        model=cfg,
        preset=ns.preset,
        steps=ns.steps,
        batch_size=ns.batch_size,
        seq_len=ns.seq_len,
        grad_accum=ns.grad_accum,
        lr=ns.lr,
        min_lr_ratio=ns.min_lr_ratio,
        warmup_steps=ns.steps // 20 if ns.warmup_steps is None else ns.warmup_steps,
        weight_decay=ns.weight_decay,
        grad_clip=ns.grad_clip,
        seed=ns.seed,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=ns.checkpoint_every,
        keep=ns.keep,
        export=ns.export,
        checkpoint_url=ns.checkpoint_url,
        export_url=ns.export_url,
        model_name=ns.model_name,
        register=ns.register,
        compile=ns.compile,
        device=ns.device,
        threads=ns.threads,
        log_every=ns.log_every,
        eval_every=ns.eval_every,
        eval_batches=ns.eval_batches,
        val_fraction=ns.val_fraction,
        text_field=ns.text_field,
        data_cache=ns.data_cache,
        metrics_file=ns.metrics_file,
    )
    try:
        return train(args, env)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
