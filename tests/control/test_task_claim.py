"""A task runs once, whatever a crashing control plane did while it spawned the task.

The local executor records `spawned` before it forks the task's wrapper. A `kill -9` between
the two leaves a record of a spawn that never happened; a restarted control plane must start the
task then (else an acknowledged job is lost), and must not start it twice when the fork did
happen (else it runs twice).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rainier.control.executor import TaskLaunch
from rainier.control.local import LocalExecutor
from rainier.control.sandbox import IsolationMode

from .conftest import wait_until


def marker_launch(tmp_path: Path, task_id: str) -> tuple[TaskLaunch, Path]:
    marks = tmp_path / f"{task_id}.marks"
    code = f"open({str(marks)!r}, 'a').write('start\\n')"
    launch = TaskLaunch(
        task_id=task_id,
        job_id="job",
        node="n1",
        command=[sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "logs" / f"{task_id}.log",
    )
    return launch, marks


def test_a_spawn_cut_short_by_a_crash_is_spawned_again(tmp_path: Path) -> None:
    launch, marks = marker_launch(tmp_path, "t1")
    first = LocalExecutor(tmp_path / "tasks", IsolationMode.OFF)
    task_dir = tmp_path / "tasks" / "t1"
    task_dir.mkdir(parents=True)
    (task_dir / "spawned").write_text("1.0")  # the crash came before the fork

    restarted = LocalExecutor(tmp_path / "tasks", IsolationMode.OFF)
    handle = restarted.start(launch)
    done = wait_until(
        lambda: (st := restarted.status("t1", handle)).state != "running" and st, 30, "the task"
    )
    assert (done.state, done.exit_code) == ("exited", 0)
    assert marks.read_text() == "start\n"
    # and once it ran, starting it again adopts it
    assert first.start(launch)["pid"] == handle["pid"]
    assert marks.read_text() == "start\n"


def test_of_two_wrappers_of_one_task_only_one_runs_it(tmp_path: Path) -> None:
    launch, marks = marker_launch(tmp_path, "t2")
    executor = LocalExecutor(tmp_path / "tasks", IsolationMode.OFF)
    executor.start(launch)
    task_dir = tmp_path / "tasks" / "t2"
    wrappers = [
        subprocess.Popen(
            [sys.executable, "-m", "rainier.control.taskwrap", str(task_dir), "--launch"]
        )
        for _ in range(3)
    ]
    assert all(w.wait(60) == 0 for w in wrappers)
    wait_until(lambda: (task_dir / "exit").exists(), 30, "the task to exit")
    assert marks.read_text() == "start\n"
