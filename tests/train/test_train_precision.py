"""The compute dtype: chosen per chip, overridable per job, and bf16 training tracking fp32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from rainier.precision import cpu_has_fast_bf16, mixed_precision, resolve_dtype, short_name
from rainier.spec import DeploymentSpec, TrainSpec
from rainier.train.env import RunEnv
from rainier.train.loop import EXIT_OK, train

from .test_train_loop import args_for

AVX2_ONLY = frozenset({"fpu", "sse2", "avx", "avx2", "fma"})  # a Zen 3's kind of list
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}


def test_bf16_is_picked_only_where_the_cpu_has_matrix_units_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAINIER_CPU_BF16", raising=False)
    assert cpu_has_fast_bf16(SAPPHIRE_RAPIDS)
    assert not cpu_has_fast_bf16(AVX2_ONLY)
    assert not cpu_has_fast_bf16(AVX2_ONLY | {"avx512_bf16"})  # converts, does not multiply
    monkeypatch.setenv("RAINIER_CPU_BF16", "0")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setenv("RAINIER_CPU_BF16", "1")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("fp32", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="'fp8' is not one of auto"):
        resolve_dtype("fp8", torch.device("cpu"))
    assert short_name(torch.bfloat16) == "bf16"
    assert not mixed_precision(torch.device("cpu"), torch.float32)._enabled


def test_the_spec_field_reaches_the_runtime_and_refuses_other_values() -> None:
    spec = TrainSpec(data=["corpus.txt"], steps=10, dtype="bf16")
    argv = spec.command("python", "job", 1, "out")
    assert argv[argv.index("--dtype") + 1] == "bf16"
    assert TrainSpec(data=["corpus.txt"], steps=10).dtype == "auto"
    with pytest.raises(ValidationError, match="dtype"):
        TrainSpec(data=["corpus.txt"], steps=10, dtype="fp16")
    with pytest.raises(ValidationError, match="dtype"):
        DeploymentSpec(name="d", model="m", dtype="float64")


def losses(out: str) -> tuple[dict[str, object], list[float]]:
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    start = next(r for r in records if r.get("event") == "start")
    return start, [r["loss"] for r in records if "loss" in r and "event" not in r]


def test_bf16_loss_curve_stays_within_bounds_of_fp32(
    corpus: Path,
    data_cache: Path,
    tmp_path: Path,
    in_process: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Same data, seed and steps: bf16 autocast over fp32 master weights learns as fp32 does,
    each logged loss within 6% (a spike of a high learning rate lands a little differently)
    and the last ten steps' mean within 3%, on any CPU (where bf16 is slow, it is still
    exact enough to train)."""
    curves = {}
    for dtype in ("fp32", "bf16"):
        changes = {"dtype": dtype, "steps": 40, "lr": 3e-3, "checkpoint_every": 0}
        code = train(args_for(corpus, data_cache, tmp_path / dtype, **changes), RunEnv())
        assert code == EXIT_OK
        start, curve = losses(capsys.readouterr().out)
        assert start["dtype"] == dtype
        curves[dtype] = curve
    fp32, bf16 = curves["fp32"], curves["bf16"]
    assert len(fp32) == len(bf16) == 40
    assert fp32[-1] < fp32[0] - 0.5, "the run learned nothing to compare"
    for step, (a, b) in enumerate(zip(fp32, bf16, strict=True)):
        assert abs(a - b) <= 0.06 * a, f"step {step + 1}: fp32 {a:.4f}, bf16 {b:.4f}"
    tail_fp32, tail_bf16 = sum(fp32[-10:]) / 10, sum(bf16[-10:]) / 10
    assert abs(tail_fp32 - tail_bf16) <= 0.03 * tail_fp32
    assert tail_bf16 < bf16[0] - 1.0
