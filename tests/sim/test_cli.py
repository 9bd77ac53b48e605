from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rainier.sim.commands import sim
from rainier.sim.model import Trace
from rainier.sim.traces import save_trace

from .conftest import random_gangs

CLUSTER = """\
flavors:
  h200: {nodes: 6, chips_per_node: 8, nodes_per_block: 2}
tenants:
  t0: {guaranteed_chips: {h200: 16}}
  t1: {guaranteed_chips: {h200: 16}, discount: 0.1}
  t2: {guaranteed_chips: {h200: 8}}
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    trace = tmp_path / "jobs.csv"
    save_trace(Trace(random_gangs(200, seed=2)), trace)
    return cluster, trace


def invoke(*args: object) -> object:
    return CliRunner().invoke(sim, [str(a) for a in args], catch_exceptions=False)


def test_run_every_policy_with_a_report(files: tuple[Path, Path], tmp_path: Path) -> None:
    cluster, trace = files
    out = tmp_path / "out"
    r = invoke(
        "run", "--cluster", cluster, "--trace", trace, "--report", out,
        "--policy", "rainier", "--policy", "fifo", "--policy", "backfill", "--policy", "sjf",
    )  # fmt: skip
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    for policy in ("rainier", "fifo", "backfill", "sjf"):
        assert f"{policy}: jobs 200/200" in r.output  # type: ignore[attr-defined]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["policies"]) == ["rainier", "fifo", "backfill", "sjf"]
    assert (out / "report.html").exists() and (out / "jct_cdf.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "lottery"], "unknown policy 'lottery'"),
        (["--tick", "-1"], "--tick"),
    ],
)
def test_run_bad_options_exit_2(files: tuple[Path, Path], args: list[str], message: str) -> None:
    cluster, trace = files
    r = invoke("run", "--cluster", cluster, "--trace", trace, *args)
    assert r.exit_code == 2  # type: ignore[attr-defined]
    assert message in r.output  # type: ignore[attr-defined]


def test_run_bad_trace_names_the_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    cluster, _ = files
    bad = tmp_path / "bad.csv"
    bad.write_text("submit_s,tenant,flavor,nodes,chips_per_node,duration_s\n0,a,h200,1,1,x\n")
    r = invoke("run", "--cluster", cluster, "--trace", bad)
    assert r.exit_code == 2  # type: ignore[attr-defined]
    assert "bad.csv line 2: duration_s" in r.output  # type: ignore[attr-defined]
    missing = tmp_path / "missing.csv"
    missing.write_text("submit_s,tenant,flavor,nodes,duration_s\n")
    r = invoke("run", "--cluster", cluster, "--trace", missing)
    assert r.exit_code == 2 and "chips_per_node" in r.output  # type: ignore[attr-defined]


def test_plan(files: tuple[Path, Path], tmp_path: Path) -> None:
    cluster, trace = files
    curve = tmp_path / "curve.json"
    r = invoke(
        "plan", "--cluster", cluster, "--trace", trace, "--target", "p95_wait<15m",
        "--flavor", "h200", "--policy", "backfill", "--report", curve,
    )  # fmt: skip
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert "smallest size meeting p95_wait<15m" in r.output  # type: ignore[attr-defined]
    data = json.loads(curve.read_text())
    assert data["best_nodes"] >= 1 and len(data["curve"]) >= 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "p95_wait<1 week"], "--target"),
        (["--target", "p95_wait<1h", "--flavor", "trn2"], "--flavor"),
    ],
)
def test_plan_bad_input_exit_2(files: tuple[Path, Path], args: list[str], message: str) -> None:
    cluster, trace = files
    r = invoke("plan", "--cluster", cluster, "--trace", trace, *args)
    assert r.exit_code == 2 and message in r.output  # type: ignore[attr-defined]


def test_trace_philly_then_run(files: tuple[Path, Path], tmp_path: Path) -> None:
    cluster, _ = files
    out = tmp_path / "gen.csv"
    r = invoke("trace", "philly", "--jobs", 300, "--cluster", cluster, "--load", 0.6, "-o", out)
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert out.read_text().count("\n") == 301
    r = invoke("run", "--cluster", cluster, "--trace", out, "--policy", "fifo")
    assert r.exit_code == 0 and "fifo: jobs" in r.output  # type: ignore[attr-defined]


def test_trace_philly_bad_runtimes_file(tmp_path: Path) -> None:
    bad = tmp_path / "r.csv"
    bad.write_text("seconds\n5\n")
    r = invoke("trace", "philly", "--runtimes", bad, "--jobs", 5, "-o", tmp_path / "o.csv")
    assert r.exit_code == 2 and "missing column 'runtime'" in r.output  # type: ignore[attr-defined]


def test_trace_import(tmp_path: Path) -> None:
    log = tmp_path / "cluster_log.csv"
    log.write_text(
        "job_id,vc,gpu_num,node_num,submit_time,duration\n1,vcA,8,1,2020-04-01 00:00:00,60\n"
        "2,vcA,0,1,2020-04-01 00:00:01,5\n"
    )
    out = tmp_path / "jobs.csv"
    r = invoke("trace", "import", "--format", "helios", "-o", out, log)
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert "wrote 1 jobs" in r.output and "1 no GPUs" in r.output  # type: ignore[attr-defined]
    r = invoke("trace", "import", "--format", "slurm", "-o", out, log)
    assert r.exit_code == 2 and "unknown format 'slurm'" in r.output  # type: ignore[attr-defined]


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rainier.sim", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    for command in ("run", "plan", "trace"):
        assert command in done.stdout
