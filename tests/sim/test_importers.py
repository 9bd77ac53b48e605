"""Importers, fed small files written here in each public trace's schema."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rainier.sim.errors import SimInputError
from rainier.sim.importers import import_trace, shape


def test_shape_keeps_even_splits_and_packs_the_rest() -> None:
    assert shape(16, 8, nodes=2) == (2, 8)
    assert shape(16, 8, nodes=4) == (4, 4)
    assert shape(6, 8, nodes=4) == (1, 6)
    assert shape(24, 8) == (3, 8)
    assert shape(3, 8) == (1, 3)


def philly_job(jobid: str, vc: str, submitted: str, attempts: list[dict[str, object]]) -> dict:
    return {
        "status": "Pass",
        "vc": vc,
        "jobid": jobid,
        "user": "u1",
        "submitted_time": submitted,
        "attempts": attempts,
    }


def attempt(start: str, end: str, machines: int, gpus: int) -> dict[str, object]:
    return {
        "start_time": start,
        "end_time": end,
        "detail": [
            {"ip": f"m{i}", "gpus": [f"gpu{g}" for g in range(gpus)]} for i in range(machines)
        ],
    }


def test_philly(tmp_path: Path) -> None:
    jobs = [
        philly_job(
            "application_1",
            "vc-a",
            "2017-10-03 02:00:00",
            [
                attempt("2017-10-03 02:00:10", "2017-10-03 02:10:10", 2, 8),
                attempt("2017-10-03 03:00:00", "2017-10-03 03:05:00", 2, 8),
            ],
        ),
        philly_job(
            "application_2",
            "vc-b",
            "2017-10-03 01:59:00",
            [attempt("2017-10-03 02:00:00", "2017-10-03 02:00:30", 1, 1)],
        ),
        philly_job("application_3", "vc-b", "2017-10-03 02:30:00", []),
        philly_job(
            "application_4",
            "vc-b",
            "2017-10-03 02:31:00",
            [{"start_time": "2017-10-03 02:31:00", "end_time": "None", "detail": []}],
        ),
    ]
    path = tmp_path / "cluster_job_log"
    path.write_text(json.dumps(jobs))
    out = import_trace("philly", [path], flavor="h200")
    by_id = {j.id: j for j in out.trace.jobs}
    assert set(by_id) == {"application_1", "application_2"}
    first = by_id["application_1"]
    assert (first.nodes, first.chips_per_node) == (2, 8)
    assert first.duration_s == 600 + 300
    assert first.submit_s == 60
    assert first.tenant == "vc-a"
    assert by_id["application_2"].submit_s == 0
    assert sum(out.skipped.values()) == 2


def test_philly_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text('[\n{"jobid": 1,\n')
    with pytest.raises(SimInputError, match="line"):
        import_trace("philly", [path])


def write_csv(path: Path, header: list[str] | None, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def test_helios(tmp_path: Path) -> None:
    header = [
        "job_id", "user", "vc", "jobname", "gpu_num", "cpu_num", "node_num", "state",
        "submit_time", "start_time", "end_time", "duration", "queue",
    ]  # fmt: skip
    rows = [
        ["1", "u", "vcA", "x", 16, 64, 2, "COMPLETED", "2020-04-01 00:00:00",
         "2020-04-01 00:01:00", "2020-04-01 01:01:00", 3600, 60],
        ["2", "u", "vcB", "y", 0, 4, 1, "COMPLETED", "2020-04-01 00:00:05",
         "2020-04-01 00:00:05", "2020-04-01 00:00:10", 5, 0],
        ["3", "u", "vcB", "z", 4, 8, 1, "FAILED", "2020-04-01 00:10:00",
         "2020-04-01 00:10:00", "2020-04-01 00:10:20", 20, 0],
    ]  # fmt: skip
    out = import_trace("helios", [write_csv(tmp_path / "cluster_log.csv", header, rows)])
    jobs = {j.id: j for j in out.trace.jobs}
    assert set(jobs) == {"1", "3"}
    assert (jobs["1"].nodes, jobs["1"].chips_per_node, jobs["1"].duration_s) == (2, 8, 3600)
    assert jobs["3"].submit_s == 600 and jobs["3"].tenant == "vcB"
    assert out.skipped == {"no GPUs": 1}


def test_acme_without_vc_uses_the_user_and_start_end(tmp_path: Path) -> None:
    header = ["job_id", "user", "node_num", "gpu_num", "state", "submit_time", "start_time",
              "end_time"]  # fmt: skip
    rows = [["a1", "alice", 4, 32, "COMPLETED", "2023-07-01 00:00:00", "2023-07-01 00:00:30",
             "2023-07-01 02:00:30"]]  # fmt: skip
    out = import_trace("helios", [write_csv(tmp_path / "trace_seren.csv", header, rows)])
    (j,) = out.trace.jobs
    assert (j.tenant, j.nodes, j.chips_per_node, j.duration_s) == ("alice", 4, 8, 7200)


def test_helios_missing_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["job_id", "submit_time", "duration"], [[1, 0, 5]])
    with pytest.raises(SimInputError, match=r"c\.csv line 1: missing column\(s\): gpu_num"):
        import_trace("helios", [path])


def test_pai(tmp_path: Path) -> None:
    jobs = write_csv(
        tmp_path / "pai_job_table.csv",
        None,
        [
            ["j1", "i1", "user1", "Terminated", 1000.0, 1600.0],
            ["j2", "i2", "user2", "Terminated", 900.0, 950.0],
            ["j3", "i3", "user2", "Failed", 1200.0, ""],
            ["j4", "i4", "user3", "Terminated", 1300.0, 1400.0],
        ],
    )
    tasks = write_csv(
        tmp_path / "pai_task_table.csv",
        None,
        [
            ["j1", "worker", 4, "Terminated", 1000.0, 1600.0, 600, 29.3, 100, "V100"],
            ["j1", "ps", 1, "Terminated", 1000.0, 1600.0, 600, 29.3, "", ""],
            ["j2", "tensorflow", 1, "Terminated", 900.0, 950.0, 600, 29.3, 50, "T4"],
            ["j3", "worker", 1, "Failed", 1200.0, "", 600, 29.3, 100, "V100"],
            ["j4", "worker", 1, "Terminated", 1300.0, 1400.0, 600, 29.3, "", ""],
        ],
    )
    out = import_trace("pai", [tasks, jobs])
    by_id = {j.id: j for j in out.trace.jobs}
    assert set(by_id) == {"j1", "j2"}
    assert (by_id["j1"].nodes, by_id["j1"].chips_per_node) == (4, 1)
    assert by_id["j1"].duration_s == 600 and by_id["j1"].submit_s == 100
    assert by_id["j2"].chips == 1 and by_id["j2"].submit_s == 0
    assert by_id["j1"].tenant == "user1"
    assert out.skipped == {"never finished": 1, "no GPUs": 1}


def test_pai_needs_both_tables(tmp_path: Path) -> None:
    jobs = write_csv(tmp_path / "jobs.csv", None, [["j1", "i1", "u", "Terminated", 1, 2]])
    with pytest.raises(SimInputError, match="pai_task_table"):
        import_trace("pai", [jobs])


def test_unknown_format() -> None:
    with pytest.raises(SimInputError, match="--format"):
        import_trace("slurm", [])
