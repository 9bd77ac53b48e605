"""Preemption and crashes lose no work: a stopped or killed run resumes to the very weights an
uninterrupted run reaches."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from rainier.train import checkpoint

from .trainkit import Reference, Run, clean_env, final_weights, max_abs_diff, run_to_end, train_args

STEPS = 16


def test_reference_keeps_only_the_newest_checkpoints(reference: Reference) -> None:
    assert [c.step for c in checkpoint.complete(reference.checkpoint_dir)] == [STEPS, 12]
    assert [r["step"] for r in reference.run.steps()] == list(range(1, STEPS + 1))
    assert reference.run.events("done")[0]["exit_code"] == 0
    assert not list(reference.checkpoint_dir.glob(".tmp-*"))


@pytest.mark.slow
def test_sigterm_then_kill_9_mid_checkpoint_then_resume_matches_uninterrupted(
    reference: Reference, corpus: Path, data_cache: Path, tmp_path: Path
) -> None:
    """One job's life: preempted at a random step, requeued, killed inside a checkpoint write,
    requeued again; it must end where a run that was never disturbed ends."""
    stop_at = random.Random().randint(1, 11)
    ckpt = tmp_path / "ckpt"
    args = train_args(corpus, data_cache, checkpoint_dir=str(ckpt), checkpoint_every="4", keep="2")
    expected_loss = {r["step"]: r["loss"] for r in reference.run.steps()}

    preempted = Run(args, clean_env(RAINIER_TRAIN_HOLD=f"step:{stop_at}"))
    preempted.wait_for(lambda r: r.get("event") == "hold")
    preempted.proc.send_signal(signal.SIGTERM)
    preempted.resume_from_hold()
    assert preempted.finish() == 0, preempted.stderr
    assert [e["step"] for e in preempted.events("preempted")] == [stop_at]
    assert preempted.events("done") == []
    assert checkpoint.complete(ckpt)[0].step == stop_at

    crashed = Run(args, clean_env(RAINIER_TRAIN_HOLD="checkpoint:12"))
    crashed.wait_for(lambda r: r.get("event") == "hold")
    crashed.proc.kill()
    assert crashed.proc.wait(timeout=60) == -signal.SIGKILL
    (start,) = crashed.events("start")
    assert start["step"] == stop_at, f"stopped at {stop_at}"
    assert start["resumed_from"] == str(checkpoint.step_dir(ckpt, stop_at))
    (torn,) = ckpt.glob(".tmp-step-000000012-*")
    assert (torn / checkpoint.STATE_FILE).stat().st_size > 0
    assert not checkpoint.step_dir(ckpt, 12).exists()
    survivor = max(stop_at, 8)
    assert checkpoint.complete(ckpt)[0].step == survivor

    resumed = run_to_end(args)
    assert resumed.events("start")[0]["step"] == survivor
    assert [r["step"] for r in resumed.steps()] == list(range(survivor + 1, STEPS + 1))
    for record in preempted.steps() + crashed.steps() + resumed.steps():
        assert abs(record["loss"] - expected_loss[record["step"]]) < 1e-6, f"stopped at {stop_at}"
    assert not list(ckpt.glob(".tmp-*"))
    assert [c.step for c in checkpoint.complete(ckpt)] == [STEPS, 12]
    diff = max_abs_diff(final_weights(reference.checkpoint_dir), final_weights(ckpt))
    assert diff < 1e-6, f"stopped at {stop_at}: weights differ by {diff}"
