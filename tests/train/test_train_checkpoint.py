"""Only whole checkpoints are ever loaded; a bad newest one falls back to the one before."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rainier.train import checkpoint


def state(step: int) -> dict[str, object]:
    return {"step": step, "weights": torch.full((4,), float(step))}


def test_save_load_and_keep_the_newest(tmp_path: Path) -> None:
    extra = tmp_path / "tokenizer.json"
    extra.write_text("{}")
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path / "ckpt", step, state(step), [extra], keep=2)
    assert [c.step for c in checkpoint.complete(tmp_path / "ckpt")] == [4, 3]
    found = checkpoint.load_latest(tmp_path / "ckpt")
    assert found is not None
    assert found[0].step == 4 and torch.equal(found[1]["weights"], torch.full((4,), 4.0))
    assert (found[0].path / "tokenizer.json").read_text() == "{}"
    assert checkpoint.load_latest(tmp_path / "nothing-here") is None


def test_torn_checkpoints_are_never_loaded(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    checkpoint.save(root, 1, state(1))
    good = checkpoint.save(root, 2, state(2))

    truncated = checkpoint.step_dir(root, 3)
    truncated.mkdir()
    (truncated / checkpoint.META_FILE).write_text((good / checkpoint.META_FILE).read_text())
    data = (good / checkpoint.STATE_FILE).read_bytes()
    (truncated / checkpoint.STATE_FILE).write_bytes(data[: len(data) // 2])
    meta = json.loads((truncated / checkpoint.META_FILE).read_text())
    meta["step"] = 3
    (truncated / checkpoint.META_FILE).write_text(json.dumps(meta))

    no_meta = checkpoint.step_dir(root, 4)
    no_meta.mkdir()
    (no_meta / checkpoint.STATE_FILE).write_bytes(data)

    (root / ".tmp-step-000000005-123").mkdir()
    assert [c.step for c in checkpoint.complete(root)] == [2, 1]
    found = checkpoint.load_latest(root)
    assert found is not None and found[0].step == 2


def test_an_unreadable_newest_checkpoint_falls_back(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    checkpoint.save(root, 1, state(1))
    newest = checkpoint.save(root, 2, state(2))
    size = (newest / checkpoint.STATE_FILE).stat().st_size
    (newest / checkpoint.STATE_FILE).write_bytes(b"\0" * size)
    found = checkpoint.load_latest(root)
    assert found is not None and found[0].step == 1


def test_saving_a_step_again_replaces_it_and_clears_stale_temporaries(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    checkpoint.save(root, 5, state(1))
    (root / ".tmp-step-000000006-999").mkdir()
    checkpoint.save(root, 5, state(7))
    found = checkpoint.load_latest(root)
    assert found is not None and torch.equal(found[1]["weights"], torch.full((4,), 7.0))
    assert sorted(p.name for p in root.iterdir()) == ["step-000000005"]
