"""The training loop: prepare data, resume, step, report, checkpoint, export.

Exit codes: 0 when the run finished, and also 0 when it was asked to stop (SIGTERM, the
preemption signal, or Ctrl-C) and saved a checkpoint first: the control plane knows it asked and
requeues the job itself, and the requeued attempt resumes from that checkpoint. 2 when the user's
arguments, data or checkpoint folder are unusable. 3 when the gradients stopped being finite: the
run stops without checkpointing, so the kept checkpoints are all from before the divergence.
Anything else is a crash.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from rainier.allocator import keep_freed_memory
from rainier.precision import mixed_precision, resolve_dtype, short_name
from rainier.train import checkpoint, data, distributed
from rainier.train.config import ModelShape
from rainier.train.env import RunEnv
from rainier.train.export import export, publish_model
from rainier.train.metrics import Poster, Reporter, peak_tflops, post_json
from rainier.train.model import Transformer, lm_loss
from rainier.train.optim import Schedule, adamw, clip_gradients
from rainier.train.tokenizer import load_tokenizer
from rainier.train.working_weights import WorkingWeights

EXIT_OK = 0
EXIT_PREEMPTED = 0
EXIT_USAGE = 2
EXIT_DIVERGED = 3
HOLD_ENV = "RAINIER_TRAIN_HOLD"


class UsageError(ValueError):
    """Something the user can fix: reported with exit code 2, never as a traceback."""


@dataclass(frozen=True)
class TrainArgs:
    data: list[str]
    model: ModelShape
    steps: int
    batch_size: int
    seq_len: int
    preset: str = "tiny"
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    keep: int = 3
    export: Path | None = None
    checkpoint_url: str | None = None
    export_url: str | None = None
    model_name: str | None = None
    register: bool = True
    compile: bool = False
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 8
    val_fraction: float = 0.01
    text_field: str = "text"
    data_cache: Path | None = None
    metrics_file: Path | None = None


class Diverged(RuntimeError):
    """A non-finite gradient norm: saving now would rotate good checkpoints out for bad ones."""


class StopRequest:
    """The first SIGTERM or SIGINT asks the loop to checkpoint and leave after the current
    step; a second Ctrl-C interrupts at once for a person who really means it."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True


class Hold:
    """Fault injection for tests: `RAINIER_TRAIN_HOLD=step:N` pauses after step N,
    `checkpoint:N` inside the write of step N's checkpoint, before it is committed,
    `upload:N` inside its upload to storage, before the manifest is written. A paused
    process says so on stdout as a JSON line and waits for a line on stdin, so a test can
    signal or kill it at an exact point instead of guessing with sleeps."""

    def __init__(self, spec: str | None) -> None:
        where, _, step = (spec or "").partition(":")
        self.where, self.step = where, int(step) if step.isdigit() else -1

    def __call__(self, where: str, step: int) -> None:
        if (where, step) == (self.where, self.step):
            print(f'{{"event": "hold", "at": "{where}", "step": {step}}}', flush=True)
            sys.stdin.readline()


def train(args: TrainArgs, env: RunEnv) -> int:
    keep_freed_memory()
    stop = StopRequest()
    stop.install()
    try:
        device = distributed.pick_device(args.device, env)
        distributed.init(env, device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    threads = args.threads or (cpu_threads(env) if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    metrics_file = args.metrics_file
    if metrics_file is None and args.checkpoint_dir is not None:
        metrics_file = args.checkpoint_dir / "metrics.jsonl"
    poster = Poster(env.control_url, env.token) if env.control_url and env.is_main else None
    reporter = Reporter(env.is_main, metrics_file, poster, env.job_id)
    try:
        return _train(args, env, device, stop, reporter)
    except Diverged as exc:
        reporter.event("diverged", detail=str(exc), exit_code=EXIT_DIVERGED)
        return EXIT_DIVERGED
    finally:
        reporter.close()
        distributed.shutdown()


def cpu_threads(env: RunEnv) -> int | None:
    """Threads for a CPU rank: its share of the cores it was given, never more.

    On the `cpu` flavor a chip is a core, so RAINIER_CHIPS is what the scheduler granted this
    node. Oversubscribing is not a small loss: OpenMP threads that wait on a descheduled
    sibling make a step tens of times slower on a shared machine.
    """
    cores = env.chips if env.flavor == "cpu" and env.chips else None
    if cores is None and env.local_world_size > 1:
        cores = os.cpu_count() or 1
    return max(1, cores // env.local_world_size) if cores else None


def _train(
    args: TrainArgs, env: RunEnv, device: torch.device, stop: StopRequest, reporter: Reporter
) -> int:
    cfg, hold = args.model, Hold(os.environ.get(HOLD_ENV))
    corpus = _prepare_corpus(args, env, device)
    tokenizer_vocab = load_tokenizer(corpus.tokenizer_path).get_vocab_size()
    if tokenizer_vocab > cfg.vocab_size:
        raise UsageError(f"tokenizer has {tokenizer_vocab} tokens, model only {cfg.vocab_size}")

    torch.manual_seed(args.seed)
    model = Transformer(cfg).to(device)
    optimizer = adamw(model, args.lr, args.weight_decay, args.betas)
    schedule = Schedule(args.lr, args.warmup_steps, args.steps, args.min_lr_ratio)
    step, samples_seen, resumed_from = 0, 0, None
    remote = checkpoint.Remote.at(args.checkpoint_url)
    found = checkpoint.load_latest(args.checkpoint_dir, remote) if args.checkpoint_dir else None
    if found is not None:
        ckpt, state = found
        if state["config"] != asdict(cfg):
            raise UsageError(
                f"--checkpoint-dir: {ckpt.path} holds a model with {state['config']}, "
                f"this run asks for {asdict(cfg)}; use another checkpoint folder"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, samples_seen = int(state["step"]), int(state["data"]["samples_seen"])
        _set_rng_state(state["rng"], env.rank, device)
        resumed_from = str(ckpt.path)
    if len(set(distributed.gather(step))) > 1:
        raise UsageError("--checkpoint-dir: ranks found different checkpoints; it must be shared")

    train_model: torch.nn.Module = torch.compile(model) if args.compile else model  # type: ignore[assignment]
    ddp = None
    if env.distributed:
        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(train_model, device_ids=ids)
        train_model = ddp
    compute_dtype = resolve_dtype(args.dtype, device)
    autocast = mixed_precision(device, compute_dtype)
    working = WorkingWeights.for_run(
        model, optimizer, compute_dtype, device, single_process=ddp is None,
        compiled=args.compile, grad_accum=args.grad_accum,
    )  # fmt: skip
    forward = working or train_model
    sampler = data.Sampler(corpus.train(), args.seq_len, args.seed)
    all_val_windows = data.validation_windows(
        corpus.val(), args.seq_len, args.eval_batches * args.batch_size * env.world_size
    )
    val_windows = all_val_windows[env.rank :: env.world_size]
    micro = args.batch_size // args.grad_accum
    tokens_per_step = args.batch_size * env.world_size * args.seq_len
    flops_per_token = cfg.flops_per_token(args.seq_len)
    peak, peak_source = peak_tflops(env.flavor, device, compute_dtype)
    last_saved = step if resumed_from else None
    nonfinite = torch.zeros((), device=device)

    def check_finite(at_step: int) -> None:
        """Read back the device-side count only here, so healthy steps never wait on it."""
        if distributed.any_true(bool(nonfinite.item() > 0), device):
            raise Diverged(f"non-finite gradient norm at or before step {at_step}")

    def save(at_step: int) -> None:
        nonlocal last_saved
        if args.checkpoint_dir is None or last_saved == at_step:
            return
        check_finite(at_step)
        rng = distributed.gather(_rng_state(device))
        if env.is_main:
            state = {
                "format": 1,
                "step": at_step,
                "config": asdict(cfg),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": asdict(schedule),
                "data": {"samples_seen": samples_seen, "seed": args.seed, "corpus": corpus.root.name},
                "rng": rng,
                "run": {"preset": args.preset, "batch_size": args.batch_size,
                        "seq_len": args.seq_len, "world_size": env.world_size},
            }  # fmt: skip
            path = checkpoint.save(
                args.checkpoint_dir,
                at_step,
                state,
                [corpus.tokenizer_path],
                args.keep,
                before_commit=lambda: hold("checkpoint", at_step),
                remote=remote,
                before_publish=lambda: hold("upload", at_step),
            )
            reporter.event("checkpoint", step=at_step, path=str(path))
        distributed.barrier()
        last_saved = at_step

    reporter.event(
        "start", job_id=env.job_id, job_name=env.job_name, tenant=env.tenant, node=env.node,
        chips=env.chips, attempt=env.attempt, rank_count=env.world_size,
        device=str(device), flavor=env.flavor, preset=args.preset, config=asdict(cfg),
        params=cfg.n_params(), flops_per_token=flops_per_token, tokens_per_step=tokens_per_step,
        dtype=short_name(compute_dtype), peak_tflops=peak, peak_source=peak_source, step=step,
        resumed_from=resumed_from,
        train_tokens=len(sampler.stream), val_sequences=len(val_windows) * env.world_size,
    )  # fmt: skip
    reporter.progress(step, args.steps)
    loss_sum, loss_steps = torch.zeros((), device=device), 0
    clock, clock_step = time.perf_counter(), step
    while step < args.steps:
        if distributed.any_true(stop.requested, device):
            save(step)
            reporter.event("preempted", step=step, exit_code=EXIT_PREEMPTED)
            return EXIT_PREEMPTED
        lr = schedule.at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        first = samples_seen + env.rank * args.batch_size
        for m in range(args.grad_accum):
            batch = torch.from_numpy(sampler.batch(first + m * micro, micro)).to(device)
            last_micro = m == args.grad_accum - 1
            with ddp.no_sync() if ddp and not last_micro else contextlib.nullcontext():
                with autocast:
                    loss = lm_loss(forward(batch[:, :-1]), batch[:, 1:])
                (loss / args.grad_accum).backward()
            loss_sum += loss.detach() / args.grad_accum
        max_norm = args.grad_clip if args.grad_clip > 0 else float("inf")
        if working is not None:
            grad_norm = working.clip_and_step(max_norm)
        else:
            grad_norm = clip_gradients(model, max_norm)
            optimizer.step()
        nonfinite += (~torch.isfinite(grad_norm)).float()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        samples_seen += args.batch_size * env.world_size
        loss_steps += 1
        hold("step", step)

        evaluate = step == args.steps or (args.eval_every > 0 and step % args.eval_every == 0)
        if evaluate or step % args.log_every == 0:
            check_finite(step)
            mean_loss = distributed.mean(loss_sum / loss_steps).item()
            elapsed = time.perf_counter() - clock
            tokens_per_s = tokens_per_step * (step - clock_step) / elapsed
            values = {
                "loss": mean_loss,
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens_per_s": tokens_per_s,
                "step_ms": 1000 * elapsed / (step - clock_step),
                "mfu": flops_per_token * tokens_per_s / (peak * 1e12 * env.world_size),
                "tokens": float(samples_seen * args.seq_len),
            }
            if evaluate and all_val_windows:
                values["val_loss"] = _validate(
                    model, val_windows, args.batch_size, device, autocast
                )
            reporter.metrics(step, values)
            reporter.advance(mean_loss)
            loss_sum.zero_()
            loss_steps = 0
            # Restart the clock before checkpointing: a save's time belongs in the next
            # window's tokens/s, not outside every window.
            clock, clock_step = time.perf_counter(), step
        else:
            reporter.advance()
        if args.checkpoint_every > 0 and step % args.checkpoint_every == 0:
            save(step)

    save(step)
    if args.export is not None and env.is_main:
        _export(args, env, model, cfg, corpus, reporter)
    distributed.barrier()
    reporter.event("done", step=step, exit_code=EXIT_OK)
    return EXIT_OK


def _prepare_corpus(args: TrainArgs, env: RunEnv, device: torch.device) -> data.Corpus:
    """Tokenize once per node (the first local rank), then everyone opens the same folder."""
    cache = args.data_cache or (
        args.checkpoint_dir / "data" if args.checkpoint_dir else default_cache()
    )
    error: data.DataError | None = None
    if env.local_rank == 0:
        try:
            data.prepare(
                args.data, cache, args.model.vocab_size, args.val_fraction, args.text_field
            )
        except data.DataError as exc:
            error = exc
    failed = distributed.any_true(error is not None, device)
    if error is not None:
        raise UsageError(f"--data: {error}")
    if failed:
        raise UsageError("--data: another rank could not prepare the corpus")
    root = data.prepare(args.data, cache, args.model.vocab_size, args.val_fraction, args.text_field)
    return data.open_corpus(root)


def default_cache() -> Path:
    home = os.environ.get("RAINIER_HOME")
    base = Path(home) / "cache" if home else Path.home() / ".cache" / "rainier"
    return base / "train-data"


@torch.no_grad()
def _validate(
    model: torch.nn.Module,
    windows: list[np.ndarray],
    batch_size: int,
    device: torch.device,
    autocast: torch.autocast,
) -> float:
    """Mean loss over the fixed validation windows, pooled across ranks."""
    model.eval()
    sums = torch.zeros(2, device=device)
    for i in range(0, len(windows), batch_size):
        batch = torch.from_numpy(np.stack(windows[i : i + batch_size])).to(device)
        with autocast:
            loss = lm_loss(model(batch[:, :-1]), batch[:, 1:])
        sums += torch.stack([loss.float() * len(batch), torch.tensor(len(batch), device=device)])
    model.train()
    sums = distributed.total(sums)
    return float(sums[0] / sums[1]) if sums[1] > 0 else float("nan")


def _export(
    args: TrainArgs,
    env: RunEnv,
    model: Transformer,
    cfg: ModelShape,
    corpus: data.Corpus,
    reporter: Reporter,
) -> None:
    assert args.export is not None
    path = export(model.state_dict(), cfg, corpus.tokenizer_path, corpus.eos_id, args.export)
    where = publish_model(path, args.export_url) if args.export_url else str(path)
    registered = False
    if env.control_url and args.register:
        name = args.model_name or env.job_name or path.name
        body = {"name": name, "path": where, "job_id": env.job_id or ""}
        registered = post_json(f"{env.control_url}/api/v1/models", body, env.token)
    reporter.event("exported", path=where, registered=registered)


def _rng_state(device: torch.device) -> dict[str, Any]:
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    name, keys, pos, has_gauss, cached = legacy
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _set_rng_state(states: list[dict[str, Any]], rank: int, device: torch.device) -> None:
    """Restore this rank's generators; a run resumed on another rank count reseeds the rest."""
    if rank >= len(states):
        return
    state = states[rank]
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
