"""Synthetic workloads drawn from real distributions shipped in `rainier/data/`.

* Run times are resampled from Philly's 83k GPU job run times (`philly_runtime.csv`).
* Tenants and their sizes come from Helios Venus' 25 virtual clusters (`helios_venus_vc_gpus.csv`):
  a tenant submits in proportion to the GPUs its virtual cluster held on average.
* GPUs per job follow a power-of-two distribution fitted to Philly's published figures
  (median 1, mean 1.93, max 128; see `rainier/data/NOTICE.md`), packed onto the flavor's nodes.
* Arrivals are Poisson. With a cluster, the rate is set so the offered load (chip-seconds asked
  per second over chips) is `load`; without one, `jobs_per_hour` sets it. Philly's run times
  have a tail of weeks, so a cluster only gets that busy once arrivals span well beyond them: a
  short trace measures a cluster that is still filling up.
* Each job's time limit (`max_duration_s`, what backfill plans with) is its run time times
  `limit_factor`, rounded up to a minute: users overestimate, and backfill must live with that.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from rainier.sim.errors import SimInputError
from rainier.sim.importers import shape
from rainier.sim.model import Cluster, Trace, TraceJob

GPUS = np.array([1, 2, 4, 8, 16, 32, 64, 128])
GPU_WEIGHTS = np.array([0.7925, 0.09, 0.06, 0.045, 0.008, 0.0025, 0.0015, 0.0005])


def data_file(name: str) -> Path:
    return Path(str(resources.files("rainier") / "data" / name))


def read_runtimes(path: Path) -> np.ndarray:
    try:
        with Path(path).open(newline="") as stream:
            reader = csv.DictReader(stream)
            if "runtime" not in (reader.fieldnames or []):
                raise SimInputError(f"{path} line 1: missing column 'runtime'")
            values = []
            for row in reader:
                try:
                    values.append(float(row["runtime"]))
                except (TypeError, ValueError):
                    raise SimInputError(
                        f"{path} line {reader.line_num}: runtime: {row['runtime']!r} is not a number"
                    ) from None
    except OSError as exc:
        raise SimInputError(f"{path}: cannot read: {exc.strerror}") from None
    runtimes = np.asarray(values, dtype=np.float64)
    runtimes = runtimes[np.isfinite(runtimes) & (runtimes >= 0)]
    if runtimes.size == 0:
        raise SimInputError(f"{path}: no run times")
    return runtimes


def read_tenant_sizes(path: Path) -> dict[str, float]:
    """Mean GPUs per virtual cluster over the days listed: every column but `date` and `total`."""
    try:
        with Path(path).open(newline="") as stream:
            reader = csv.DictReader(stream)
            names = [n for n in reader.fieldnames or [] if n not in ("date", "total")]
            if not names:
                raise SimInputError(f"{path} line 1: no tenant columns besides date and total")
            sums = dict.fromkeys(names, 0.0)
            days = 0
            for row in reader:
                days += 1
                for name in names:
                    try:
                        sums[name] += float(row[name] or 0)
                    except ValueError:
                        raise SimInputError(
                            f"{path} line {reader.line_num}: {name}: {row[name]!r} is not a number"
                        ) from None
    except OSError as exc:
        raise SimInputError(f"{path}: cannot read: {exc.strerror}") from None
    sizes = {name.lower(): total / max(days, 1) for name, total in sums.items() if total > 0}
    if not sizes:
        raise SimInputError(f"{path}: every tenant holds 0 GPUs")
    return sizes


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    jobs: int = 100_000
    seed: int = 0
    load: float = 0.8
    jobs_per_hour: float | None = None
    flavor: str | None = None
    checkpoint_interval_s: float | None = 1800.0
    limit_factor: float = 2.0
    grace_period_s: float = 30.0


def generate(
    runtimes: np.ndarray,
    tenant_sizes: dict[str, float],
    cluster: Cluster | None = None,
    config: GeneratorConfig | None = None,
) -> Trace:
    cfg = config or GeneratorConfig()
    rng = np.random.default_rng(cfg.seed)
    n = cfg.jobs
    flavors, node_chips, capacity = _flavors(cluster, cfg.flavor)
    names = _tenant_names(tenant_sizes, cluster)
    sizes = np.array([tenant_sizes[v] for v in names.values()], dtype=np.float64)

    durations = np.maximum(rng.choice(runtimes, size=n), 1.0)
    gpus = rng.choice(GPUS, size=n, p=GPU_WEIGHTS / GPU_WEIGHTS.sum())
    tenant_idx = rng.choice(len(names), size=n, p=sizes / sizes.sum())
    flavor_idx = rng.choice(len(flavors), size=n, p=capacity / capacity.sum())
    if cluster is not None and cfg.jobs_per_hour is None:
        work_per_job = float(np.mean(gpus) * np.mean(durations))
        rate_per_s = cfg.load * float(capacity.sum()) / work_per_job
    else:
        rate_per_s = (cfg.jobs_per_hour or 60.0) / 3600.0
    submits = np.cumsum(rng.exponential(1.0 / rate_per_s, size=n))
    submits -= submits[0]
    limits = np.ceil(durations * cfg.limit_factor / 60.0) * 60.0

    tenant_names = list(names)
    jobs = []
    for i in range(n):
        f = int(flavor_idx[i])
        nodes, cpn = shape(int(gpus[i]), node_chips[f])
        jobs.append(
            TraceJob(
                id=f"g{i}",
                submit_s=round(float(submits[i]), 3),
                tenant=tenant_names[int(tenant_idx[i])],
                flavor=flavors[f],
                nodes=nodes,
                chips_per_node=cpn,
                duration_s=float(durations[i]),
                checkpoint_interval_s=cfg.checkpoint_interval_s,
                max_duration_s=float(limits[i]),
                grace_period_s=cfg.grace_period_s,
            )
        )
    return Trace(jobs)


def _flavors(
    cluster: Cluster | None, flavor: str | None
) -> tuple[list[str], list[int], np.ndarray]:
    if cluster is None:
        return [flavor or "h200"], [8], np.array([1.0])
    pools = [p for p in cluster.pools if flavor is None or p.flavor == flavor]
    if not pools:
        raise SimInputError(f"--flavor: {flavor!r} is not a flavor of the cluster")
    return (
        [p.flavor for p in pools],
        [p.chips_per_node for p in pools],
        np.array([p.chips for p in pools], dtype=np.float64),
    )


def _tenant_names(tenant_sizes: dict[str, float], cluster: Cluster | None) -> dict[str, str]:
    """Output tenant -> source tenant. A cluster's contracts take the largest sources, biggest
    guarantee first, so the busiest tenants are the ones holding the largest contracts."""
    by_size = sorted(tenant_sizes, key=lambda v: (-tenant_sizes[v], v))
    if cluster is None or not cluster.tenants:
        return {v: v for v in by_size}
    contracts = sorted(cluster.tenants, key=lambda t: (-sum(t.guaranteed_chips.values()), t.tenant))
    count = min(len(contracts), len(by_size))
    return {contracts[i].tenant: by_size[i] for i in range(count)}


def offered_load(trace: Trace, cluster: Cluster) -> float:
    """Chip-seconds asked per second of the trace's span, over the cluster's chips."""
    if not trace.jobs:
        return 0.0
    span = max(j.submit_s for j in trace.jobs) - min(j.submit_s for j in trace.jobs)
    work = sum(j.chips * j.duration_s for j in trace.jobs)
    chips = sum(p.chips for p in cluster.pools)
    return work / span / chips if span > 0 and chips else math.inf
