"""The launcher's environment: torchrun's variables or rainier's, and what they imply."""

from __future__ import annotations

import pytest

from rainier.train.env import RunEnv
from rainier.train.loop import cpu_threads


def test_rainier_variables_fill_in_for_absent_standard_ones() -> None:
    env = RunEnv.from_environ(
        {
            "RAINIER_RANK": "3",
            "RAINIER_WORLD_SIZE": "4",
            "RAINIER_JOB_ID": "j-1",
            "RAINIER_FLAVOR": "h200",
            "RAINIER_CHIPS": "8",
            "RAINIER_ATTEMPT": "2",
            "RAINIER_CONTROL_URL": "http://cp:8000/",
            "RAINIER_CHECKPOINT_DIR": "/ckpt",
        }
    )
    assert (env.rank, env.world_size, env.distributed, env.is_main) == (3, 4, True, False)
    assert (env.job_id, env.flavor, env.chips, env.attempt) == ("j-1", "h200", 8, 2)
    assert env.control_url == "http://cp:8000" and env.checkpoint_dir == "/ckpt"
    standard = RunEnv.from_environ({"RANK": "1", "WORLD_SIZE": "2", "RAINIER_RANK": "0"})
    assert (standard.rank, standard.world_size) == (1, 2)
    assert RunEnv.from_environ({}) == RunEnv()


@pytest.mark.parametrize(
    "environ", [{"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "two"}, {"RAINIER_ATTEMPT": "x"}]
)
def test_inconsistent_launcher_variables_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        RunEnv.from_environ(environ)


def test_cpu_ranks_split_the_cores_they_were_granted() -> None:
    assert cpu_threads(RunEnv(flavor="cpu", chips=4)) == 4
    assert cpu_threads(RunEnv(flavor="cpu", chips=4, local_world_size=2)) == 2
    assert cpu_threads(RunEnv(flavor="cpu", chips=1, local_world_size=2)) == 1
    assert cpu_threads(RunEnv()) is None
    assert cpu_threads(RunEnv(flavor="h200", chips=8)) is None
