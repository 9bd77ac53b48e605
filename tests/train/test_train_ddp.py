"""Data parallelism changes who computes a batch, not what is learned."""

from __future__ import annotations

from pathlib import Path

import pytest

from .trainkit import Reference, Run, clean_env, final_weights, free_port, max_abs_diff, train_args


@pytest.mark.slow
def test_two_gloo_ranks_match_one_rank_with_twice_the_batch(
    reference: Reference, corpus: Path, data_cache: Path, tmp_path: Path
) -> None:
    """The reference ran 1 rank x batch 4 (two micro-batches of 2); here 2 ranks x batch 2."""
    port = str(free_port())
    args = train_args(
        corpus, data_cache, batch_size="2", grad_accum="1", checkpoint_dir=str(tmp_path / "ckpt")
    )
    ranks = [
        Run(
            args,
            clean_env(
                RANK=str(rank),
                WORLD_SIZE="2",
                LOCAL_RANK=str(rank),
                LOCAL_WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            ),
        )
        for rank in range(2)
    ]
    codes = [r.finish() for r in ranks]
    assert codes == [0, 0], "\n".join(r.stderr for r in ranks)
    assert ranks[1].records == [], "only rank 0 reports"
    (start,) = ranks[0].events("start")
    assert start["rank_count"] == 2
    assert start["tokens_per_step"] == reference.run.events("start")[0]["tokens_per_step"]

    expected = {r["step"]: r for r in reference.run.steps()}
    steps = ranks[0].steps()
    assert [r["step"] for r in steps] == sorted(expected)
    for record in steps:
        assert abs(record["loss"] - expected[record["step"]]["loss"]) < 1e-4, record
    assert abs(steps[-1]["val_loss"] - expected[steps[-1]["step"]]["val_loss"]) < 1e-4
    assert (
        max_abs_diff(final_weights(reference.checkpoint_dir), final_weights(tmp_path / "ckpt"))
        < 1e-4
    )
