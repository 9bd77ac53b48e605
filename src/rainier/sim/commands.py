"""`rainier sim`: run policies against a trace, plan capacity, build and import traces.

Mistakes in what the user gave (a missing column, an unknown policy, a bad target) end with a
message naming the file, line and field, and exit code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from rainier.catalog import FLAVORS
from rainier.sim.cluster import load_cluster
from rainier.sim.engine import Simulation
from rainier.sim.errors import SimInputError
from rainier.sim.generator import (
    GeneratorConfig,
    data_file,
    generate,
    read_runtimes,
    read_tenant_sizes,
)
from rainier.sim.importers import FORMATS, import_trace
from rainier.sim.metrics import summarize
from rainier.sim.model import Cluster, Trace
from rainier.sim.plan import CapacityPlan, parse_target, plan
from rainier.sim.policies import POLICIES, make_policy
from rainier.sim.records import PolicyError, SimConfig, SimResult
from rainier.sim.traces import load_trace, save_trace


class InputProblem(click.ClickException):
    exit_code = 2


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except SimInputError as exc:
        raise InputProblem(str(exc)) from None
    except PolicyError as exc:
        raise click.ClickException(f"policy error: {exc}") from None


def _progress_bar(enabled: bool | None, total: int, label: str) -> Any:
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="job", file=sys.stderr, leave=False)


def _on_progress(bar: Any) -> Callable[[int, int], None] | None:
    if bar is None:
        return None

    def update(done: int, total: int) -> None:
        bar.update(done - bar.n)

    return update


def _load(cluster_path: Path, trace_path: Path) -> tuple[Cluster, Trace]:
    cluster = load_cluster(cluster_path)
    trace = load_trace(trace_path, flavors=[p.flavor for p in cluster.pools])
    return cluster, trace


def run_policy(
    cluster: Cluster,
    trace: Trace,
    name: str,
    config: SimConfig,
    progress: bool | None = False,
) -> SimResult:
    policy = make_policy(name, trace, config.queue_window)
    cfg = replace(config, queue_window=policy.queue_window, skip_when_full=not policy.preempts)
    bar = _progress_bar(progress, len(trace.jobs), name)
    try:
        sim = Simulation(cluster, trace, policy.scheduler, name, cfg, _on_progress(bar))
        return sim.run()
    finally:
        if bar is not None:
            bar.close()


@click.group(help="Simulate rainier's scheduler and baselines against job traces.")
def sim() -> None:
    pass


_progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: only when stderr is a terminal).",
)
_window_option = click.option(
    "--queue-window",
    type=click.IntRange(min=1),
    default=None,
    help="Jobs per (tenant, flavor) queue shown to the policy (default: per policy).",
)
_tick_option = click.option(
    "--tick",
    "tick_s",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Schedule on a reconciler tick of this many seconds (0: after every event).",
)


def _check_policies(names: tuple[str, ...]) -> list[str]:
    out = list(dict.fromkeys(names or ("rainier",)))
    for name in out:
        if name not in POLICIES:
            raise SimInputError(f"--policy: unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return out


@sim.command("run")
@click.option("--cluster", "cluster_path", type=click.Path(path_type=Path), required=True)
@click.option("--trace", "trace_path", type=click.Path(path_type=Path), required=True)
@click.option("--policy", "policies", multiple=True, help=f"One of {', '.join(POLICIES)}.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None)
@_window_option
@_tick_option
@click.option(
    "--sigterm-checkpoints",
    is_flag=True,
    help="Preempted jobs checkpoint on SIGTERM and lose no work.",
)
@_progress_option
def run_command(
    cluster_path: Path,
    trace_path: Path,
    policies: tuple[str, ...],
    report_dir: Path | None,
    queue_window: int | None,
    tick_s: float,
    sigterm_checkpoints: bool,
    progress: bool | None,
) -> None:
    """Run each policy against the trace and print (and optionally report) the metrics."""
    with _user_errors():
        names = _check_policies(policies)
        cluster, trace = _load(cluster_path, trace_path)
        config = SimConfig(
            queue_window=queue_window, tick_s=tick_s, sigterm_checkpoints=sigterm_checkpoints
        )
        results = [run_policy(cluster, trace, n, config, progress) for n in names]
        summaries = [summarize(r) for r in results]
        for s in summaries:
            click.echo(_one_line(s))
        if report_dir is not None:
            from rainier.sim.report import write_report

            context = {
                "cluster": str(cluster_path),
                "trace": str(trace_path),
                "jobs": len(trace.jobs),
                "chips": {p.flavor: p.chips for p in cluster.pools},
                "tick_s": tick_s,
            }
            paths = write_report(results, summaries, report_dir, context)
            click.echo(f"report: {paths['html']}")


def _one_line(s: dict[str, Any]) -> str:
    def h(v: float | None) -> str:
        return "-" if v is None else f"{v / 3600:.2f}h"

    util = " ".join(f"{f}={100 * u:.1f}%" for f, u in s["utilization_while_arriving"].items())
    return (
        f"{s['policy']:>9}: jobs {s['completed']}/{s['jobs']}  "
        f"wait mean {h(s['wait_s']['mean'])} p95 {h(s['wait_s']['p95'])}  "
        f"jct mean {h(s['jct_s']['mean'])} p95 {h(s['jct_s']['p95'])}  util while arriving {util}  "
        f"preemptions {s['preemptions']}  guarantee violations {s['guarantee_violations']}  "
        f"billed ${s['billed_usd']}"
    )


@sim.command("plan")
@click.option("--cluster", "cluster_path", type=click.Path(path_type=Path), required=True)
@click.option("--trace", "trace_path", type=click.Path(path_type=Path), required=True)
@click.option("--target", required=True, help="Like 'p95_wait<1h' or 'mean_jct<=30m'.")
@click.option("--flavor", default=None, help="Resize only this flavor's node count.")
@click.option("--policy", default="rainier", show_default=True)
@click.option("--max-nodes", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the explored curve as JSON here.",
)
@_window_option
@_tick_option
def plan_command(
    cluster_path: Path,
    trace_path: Path,
    target: str,
    flavor: str | None,
    policy: str,
    max_nodes: int,
    report_path: Path | None,
    queue_window: int | None,
    tick_s: float,
) -> None:
    """Find the fewest nodes whose simulated queueing meets the target."""
    with _user_errors():
        goal = parse_target(target)
        _check_policies((policy,))
        cluster, trace = _load(cluster_path, trace_path)

        def show(p: Any) -> None:
            verdict = "meets" if p.met else "misses"
            click.echo(
                f"  {p.nodes:>8} nodes {p.chips:>9} chips  {goal.stat}_{goal.metric} "
                f"{p.value_s:,.0f}s  {verdict}"
            )

        click.echo(f"target {goal.text} with {policy}:")
        result = plan(
            cluster,
            trace,
            goal,
            flavor,
            policy,
            SimConfig(queue_window=queue_window, tick_s=tick_s),
            max_nodes,
            show,
        )
        click.echo(_plan_verdict(result))
        if report_path is not None:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report_path.write_text(json.dumps(plan_json(result), indent=2) + "\n")


def _plan_verdict(result: CapacityPlan) -> str:
    if result.best_nodes is None:
        return f"no size up to the limit meets {result.target.text}"
    chips = next(p.chips for p in result.points if p.nodes == result.best_nodes)
    return (
        f"smallest size meeting {result.target.text}: {result.best_nodes} {result.flavor} "
        f"nodes ({chips} chips in all)"
    )


def plan_json(result: CapacityPlan) -> dict[str, Any]:
    return {
        "target": result.target.text,
        "flavor": result.flavor,
        "policy": result.policy,
        "best_nodes": result.best_nodes,
        "curve": [
            {"nodes": p.nodes, "chips": p.chips, "value_s": p.value_s, "met": p.met}
            for p in result.curve()
        ],
    }


@sim.group("trace", help="Build rainier traces: generated from real distributions or imported.")
def trace_group() -> None:
    pass


@trace_group.command("philly")
@click.option(
    "--runtimes",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV with a 'runtime' column (default: the shipped Philly run times).",
)
@click.option(
    "--tenants",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV of GPUs per tenant per day (default: the shipped Helios Venus VCs).",
)
@click.option("--jobs", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--cluster",
    "cluster_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Size arrivals for this cluster and use its flavors and tenants.",
)
@click.option(
    "--load",
    type=click.FloatRange(min=0, min_open=True),
    default=0.8,
    show_default=True,
    help="Offered load on --cluster.",
)
@click.option("--jobs-per-hour", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--flavor", default=None, help="Put every job on this flavor.")
@click.option(
    "--checkpoint-interval",
    type=click.FloatRange(min=0),
    default=1800.0,
    show_default=True,
    help="Seconds between checkpoints (0: never).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def trace_philly(
    runtimes: Path | None,
    tenants: Path | None,
    jobs: int,
    seed: int,
    cluster_path: Path | None,
    load: float,
    jobs_per_hour: float | None,
    flavor: str | None,
    checkpoint_interval: float,
    output: Path,
) -> None:
    """Generate a trace from Philly run times and Helios tenant sizes."""
    with _user_errors():
        if flavor is not None and flavor not in FLAVORS:
            raise SimInputError(f"--flavor: unknown flavor {flavor!r}")
        cluster = load_cluster(cluster_path) if cluster_path is not None else None
        trace = generate(
            read_runtimes(runtimes or data_file("philly_runtime.csv")),
            read_tenant_sizes(tenants or data_file("helios_venus_vc_gpus.csv")),
            cluster,
            GeneratorConfig(
                jobs=jobs,
                seed=seed,
                load=load,
                jobs_per_hour=jobs_per_hour,
                flavor=flavor,
                checkpoint_interval_s=checkpoint_interval or None,
            ),
        )
        save_trace(trace, output)
        click.echo(f"wrote {len(trace.jobs)} jobs to {output}")


@trace_group.command("import")
@click.option("--format", "fmt", required=True, help=f"One of {', '.join(FORMATS)}.")
@click.option("--flavor", default="h200", show_default=True, help="Flavor the GPUs become.")
@click.option(
    "--node-chips",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Chips per node, to shape gangs the trace does not shape.",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def trace_import(
    fmt: str, flavor: str, node_chips: int, output: Path, files: tuple[Path, ...]
) -> None:
    """Convert a public trace (Philly, Helios/Acme, Alibaba PAI 2020) to rainier's CSV."""
    with _user_errors():
        if flavor not in FLAVORS:
            raise SimInputError(f"--flavor: unknown flavor {flavor!r}")
        imported = import_trace(fmt, list(files), flavor, node_chips)
        save_trace(imported.trace, output)
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(imported.skipped.items()))
        click.echo(
            f"wrote {len(imported.trace.jobs)} jobs to {output}"
            + (f" (dropped: {dropped})" if dropped else "")
        )
