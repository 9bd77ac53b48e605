"""A wrong argument is answered with exit code 2 and the argument's name, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rainier.train.__main__ import main

from .trainkit import clean_env


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "ten"], "--steps"),
        (["--steps", "5", "--preset", "7b"], "--preset"),
        (["--steps", "5", "--override", "layers=2"], "--override"),
        (["--steps", "5", "--override", "n_kv_heads=3"], "--override"),
        (["--steps", "5", "--batch-size", "6", "--grad-accum", "4"], "--grad-accum"),
        (["--steps", "5", "--seq-len", "4096"], "--seq-len"),
        (["--steps", "5", "--val-fraction", "1.5"], "--val-fraction"),
        (["--steps", "5", "--lr", "-1"], "--lr"),
        (["--steps", "5", "--data", "/nonexistent/corpus"], "--data"),
        (["--steps", "5", "--checkpoint-every", "2"], "--checkpoint-every"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(
    args: list[str],
    named: str,
    corpus: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAINIER_CHECKPOINT_DIR", raising=False)
    argv = args if "--data" in args else ["--data", str(corpus), *args]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"argument {named}" in capsys.readouterr().err


def test_unusable_data_found_while_preparing_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], in_process: None
) -> None:
    (tmp_path / "broken.jsonl").write_text('{"text": "ok"}\n{"other": 1}\n')
    code = main(["--data", str(tmp_path / "broken.jsonl"), "--steps", "1", "--seq-len", "8",
                 "--data-cache", str(tmp_path / "cache"), "--threads", "1"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--data: " in err and "broken.jsonl:2: no string field 'text'" in err


def test_a_real_process_exits_2_and_help_explains_the_contract() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "rainier.train", "--steps", "3"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert bad.returncode == 2
    assert "--data" in bad.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "rainier.train", "--help"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=True,
    ).stdout
    for needle in ("--checkpoint-dir", "RAINIER_CHECKPOINT_DIR", "SIGTERM", "exit codes", "125m"):
        assert needle in help_text
