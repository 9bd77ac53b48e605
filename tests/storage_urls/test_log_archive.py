"""A finished task's log goes to its job's prefix, with the task's own storage variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from rainier.control.log_archive import archive_log, log_url


def test_a_log_lands_beside_the_jobs_checkpoints(tmp_path: Path) -> None:
    log = tmp_path / "rank-1.log"
    log.write_text('{"event": "done"}\n')
    env = {
        "RAINIER_STORAGE_URL": f"file://{tmp_path}/store/acme",
        "RAINIER_JOB_ID": "job-7",
        "RAINIER_RANK": "1",
    }
    url = archive_log(log, env)
    assert url == f"file://{tmp_path}/store/acme/jobs/job-7/logs/rank-1.log"
    assert (tmp_path / "store/acme/jobs/job-7/logs/rank-1.log").read_text() == log.read_text()


def test_without_storage_by_url_nothing_is_archived(tmp_path: Path) -> None:
    log = tmp_path / "rank-0.log"
    log.write_text("x")
    assert log_url({"RAINIER_JOB_ID": "j", "RAINIER_RANK": "0"}) is None
    assert archive_log(log, {"RAINIER_JOB_ID": "j", "RAINIER_RANK": "0"}) is None


def test_a_store_that_refuses_leaves_a_line_and_no_exception(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "rank-0.log"
    log.write_text("x")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    env = {"RAINIER_STORAGE_URL": f"file://{blocked}", "RAINIER_JOB_ID": "j", "RAINIER_RANK": "0"}
    assert archive_log(log, env) is None
    assert "could not archive the log" in capsys.readouterr().err
