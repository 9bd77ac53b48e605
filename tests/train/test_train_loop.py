"""The loop in-process: what it does when training or the control plane goes wrong."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from rainier.allocator import keep_freed_memory
from rainier.train import checkpoint
from rainier.train.config import PRESETS
from rainier.train.env import RunEnv
from rainier.train.loop import EXIT_DIVERGED, EXIT_OK, TrainArgs, train

from .trainkit import free_port


def args_for(corpus: Path, data_cache: Path, tmp_path: Path, **changes: object) -> TrainArgs:
    base = TrainArgs(
        data=[str(corpus)],
        model=PRESETS["tiny"],
        steps=4,
        batch_size=2,
        seq_len=16,
        seed=1,
        threads=1,
        log_every=1,
        val_fraction=0.05,
        data_cache=data_cache,
        checkpoint_dir=tmp_path / "ckpt",
        checkpoint_every=1,
        keep=10,
    )
    return TrainArgs(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_a_diverging_run_stops_before_checkpointing_bad_weights(
    corpus: Path,
    data_cache: Path,
    tmp_path: Path,
    in_process: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = train(args_for(corpus, data_cache, tmp_path, lr=1e30, grad_clip=0.0), RunEnv())
    assert code == EXIT_DIVERGED
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in lines if r.get("event") == "diverged"] == ["diverged"]
    saved = checkpoint.complete(tmp_path / "ckpt")
    assert len(saved) < 4
    for ckpt in saved:
        state = torch.load(ckpt.path / checkpoint.STATE_FILE, weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["model"].values()), ckpt.path


def test_an_unreachable_control_plane_costs_the_run_nothing(
    corpus: Path,
    data_cache: Path,
    tmp_path: Path,
    in_process: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = RunEnv(control_url=f"http://127.0.0.1:{free_port()}", token="t", job_id="j")
    export_dir = tmp_path / "export"
    assert train(args_for(corpus, data_cache, tmp_path, export=export_dir), env) == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in lines if "loss" in r)
    (exported,) = [r for r in lines if r.get("event") == "exported"]
    assert exported["registered"] is False and (export_dir / "model.safetensors").is_file()
    (unposted,) = [r for r in lines if r.get("event") == "metrics_not_posted"]
    assert unposted["count"] == 4


def test_allocator_settings_leave_a_users_malloc_choice_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    applied = keep_freed_memory()  # glibc's mallopt accepts both thresholds
    assert applied is True or not sys.platform.startswith("linux")
