"""How fast rainier's scheduler decides on a Rainier-scale cluster.

The cluster: 31,250 nodes of 16 chips (500,000 chips) in blocks of 4 nodes (an UltraServer),
racks of 2 nodes, 4 zones; blocks are trn2, h200 or gb200 in a 5:3:2 ratio. 20 tenants hold
contracts whose guarantees split 70% of each flavor in proportion to the 20 largest virtual
clusters of SenseTime's Venus cluster (Helios trace); half may borrow without limit, half up to
half their guarantee.

Jobs follow Microsoft's Philly trace: run times are drawn from `philly_runtime.csv`; sizes from
a GPU-count distribution with Philly's mean (1.93) and median (1). A job of 1-8 GPUs asks for
that many chips on one node; the rare job of 16-128 GPUs is scaled up 64x into a gang of whole
nodes (1,024-8,192 chips). 20% of jobs declare no max_duration_s; the others declare 1.5x their
actual run time. 5% of pending work is deployment replicas (8 chips).

50,000 jobs are running and 10,000 are pending. Each pass the clock moves 60 s: finished and
preempted work leaves, admitted work starts, and new arrivals refill the queue to 10,000.

The last line printed is JSON: placements_per_s (admissions over total pass time), pass_p50_s,
pass_p99_s, peak_rss_mb, plus the counts behind them. Pass times are CPU seconds of this
process (a pass is single-threaded, so on an idle core they equal wall time, and they stay
meaningful on a machine shared with other work); wall-clock percentiles are reported beside
them as wall_p50_s and wall_p99_s.
"""

from __future__ import annotations

import csv
import json
import resource
import sys
import time
from dataclasses import replace
from importlib import resources

import numpy as np

from rainier.scheduler.policy import RainierScheduler
from rainier.scheduler.types import Allocation, ClusterState, NodeInfo, Quota, Workload

NODES = 31_250
CHIPS = 16
NODES_PER_BLOCK = 4
NODES_PER_RACK = 2
ZONES = 4
TENANTS = 20
RUNNING = 50_000
PENDING = 10_000
PASSES = 12
STEP_S = 60.0
GPUS = np.array([1, 2, 4, 8, 16, 32, 64, 128])
GPU_P = np.array([0.75, 0.10, 0.07, 0.077, 0.002, 0.0007, 0.0002, 0.0001])
FLAVOR_OF_BLOCK = ["trn2"] * 5 + ["h200"] * 3 + ["gb200"] * 2


def philly_runtimes() -> np.ndarray:
    path = resources.files("rainier") / "data" / "philly_runtime.csv"
    with path.open() as fh:
        rows = csv.reader(fh)
        next(rows)
        values = np.array([float(r[0]) for r in rows if r])
    return values[values > 0]


def venus_shares() -> np.ndarray:
    path = resources.files("rainier") / "data" / "helios_venus_vc_gpus.csv"
    with path.open() as fh:
        rows = list(csv.reader(fh))
    peak = np.array([[float(x) for x in r[1:-1]] for r in rows[1:]]).max(axis=0)
    top = np.sort(peak)[::-1][:TENANTS]
    return top / top.sum()


def build_nodes() -> list[NodeInfo]:
    blocks = (NODES + NODES_PER_BLOCK - 1) // NODES_PER_BLOCK
    out = []
    for i in range(NODES):
        b = i // NODES_PER_BLOCK
        out.append(
            NodeInfo(
                name=f"node-{i:05d}",
                flavor=FLAVOR_OF_BLOCK[b % len(FLAVOR_OF_BLOCK)],
                chips=CHIPS,
                zone=f"zone-{b * ZONES // blocks}",
                block=f"block-{b:04d}",
                rack=f"rack-{i // NODES_PER_RACK:05d}",
            )
        )
    return out


def build_quotas(nodes: list[NodeInfo]) -> list[Quota]:
    capacity: dict[str, int] = {}
    for n in nodes:
        capacity[n.flavor] = capacity.get(n.flavor, 0) + n.chips
    shares = venus_shares()
    quotas = []
    for t in range(TENANTS):
        guaranteed = {f: int(0.7 * c * shares[t]) // CHIPS * CHIPS for f, c in capacity.items()}
        limit = None if t % 2 == 0 else {f: g // 2 for f, g in guaranteed.items()}
        quotas.append(Quota(f"tenant-{t:02d}", guaranteed, limit, None, t % 3))
    return quotas


class JobSource:
    """Draws Philly-shaped jobs; ids are sequential so runs are reproducible."""

    def __init__(self, rng: np.random.Generator, shares: np.ndarray) -> None:
        self.rng = rng
        self.runtimes = philly_runtimes()
        self.shares = shares
        self.count = 0

    def job(self, now_s: float, replica_share: float = 0.0) -> tuple[Workload, float]:
        rng = self.rng
        self.count += 1
        tenant = f"tenant-{int(rng.choice(TENANTS, p=self.shares)):02d}"
        flavor = FLAVOR_OF_BLOCK[int(rng.integers(len(FLAVOR_OF_BLOCK)))]
        runtime = float(rng.choice(self.runtimes))
        declared = None if rng.random() < 0.2 else 1.5 * runtime
        if rng.random() < replica_share:
            w = Workload(
                f"rep-{self.count}", tenant, flavor, 1, 8, 50, "replica", submitted_s=now_s
            )
            return w, runtime
        gpus = int(rng.choice(GPUS, p=GPU_P))
        nodes, cpn = (1, gpus) if gpus <= 8 else (gpus * 64 // CHIPS, CHIPS)
        w = Workload(
            f"job-{self.count}",
            tenant,
            flavor,
            nodes,
            cpn,
            priority=int(rng.integers(0, 3)),
            within="zone" if nodes > 1 and rng.random() < 0.5 else None,
            max_duration_s=declared,
            submitted_s=now_s,
        )
        return w, runtime


def initial_running(
    nodes: list[NodeInfo], gen: JobSource, rng: np.random.Generator
) -> tuple[list[Allocation], dict[str, float]]:
    by_flavor: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        by_flavor.setdefault(n.flavor, []).append(i)
    free = np.full(len(nodes), CHIPS, dtype=np.int64)
    whole_from_end = {f: len(ix) - 1 for f, ix in by_flavor.items()}
    running: list[Allocation] = []
    ends: dict[str, float] = {}
    while len(running) < RUNNING:
        w, runtime = gen.job(0.0)
        ix = by_flavor[w.flavor]
        chosen: list[int] = []
        if w.nodes == 1:
            for _ in range(16):
                i = ix[int(rng.integers(len(ix)))]
                if free[i] >= w.chips_per_node:
                    chosen = [i]
                    break
        else:
            k = whole_from_end[w.flavor]
            while k >= 0 and len(chosen) < w.nodes:
                if free[ix[k]] == CHIPS:
                    chosen.append(ix[k])
                k -= 1
            if len(chosen) < w.nodes:
                continue
            whole_from_end[w.flavor] = k
        if not chosen:
            continue
        free[chosen] -= w.chips_per_node
        started = -float(rng.random()) * runtime
        running.append(Allocation(w, tuple(nodes[i].name for i in chosen), started))
        ends[w.id] = started + runtime
    return running, ends


def main() -> None:
    rng = np.random.default_rng(7)
    nodes = build_nodes()
    quotas = build_quotas(nodes)
    gen = JobSource(rng, venus_shares())
    running, ends = initial_running(nodes, gen, rng)
    pending: list[Workload] = []
    runtime_of: dict[str, float] = {}
    scheduler = RainierScheduler()
    now = 0.0
    times: list[float] = []
    walls: list[float] = []
    admitted = preempted = 0
    for _ in range(PASSES):
        while len(pending) < PENDING:
            w, runtime = gen.job(now, replica_share=0.05)
            pending.append(w)
            runtime_of[w.id] = runtime
        state = ClusterState(now, tuple(nodes), tuple(quotas), tuple(running), tuple(pending))
        w0, t0 = time.perf_counter(), time.process_time()
        decisions = scheduler.schedule(state)
        times.append(time.process_time() - t0)
        walls.append(time.perf_counter() - w0)
        admitted += len(decisions.admit)
        preempted += len(decisions.preempt)
        by_id = {w.id: w for w in pending}
        for a in decisions.admit:
            w = by_id.pop(a.workload_id)
            running.append(Allocation(w, a.node_names, now))
            ends[w.id] = now + runtime_of[w.id]
        stop = {p.workload_id for p in decisions.preempt}
        requeued = [replace(a.workload, submitted_s=now) for a in running if a.workload.id in stop]
        for w in requeued:
            runtime_of[w.id] = max(1.0, ends[w.id] - now)
        pending = list(by_id.values()) + requeued
        now += STEP_S
        running = [a for a in running if ends[a.workload.id] > now and a.workload.id not in stop]
    total = sum(times)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "placements_per_s": round(admitted / total, 1),
        "pass_p50_s": round(float(np.percentile(times, 50)), 4),
        "pass_p99_s": round(float(np.percentile(times, 99)), 4),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "wall_p50_s": round(float(np.percentile(walls, 50)), 4),
        "wall_p99_s": round(float(np.percentile(walls, 99)), 4),
        "passes": PASSES,
        "admitted": admitted,
        "preempted": preempted,
        "nodes": NODES,
        "chips": NODES * CHIPS,
        "running_at_start": RUNNING,
        "pending_per_pass": PENDING,
    }
    print(json.dumps(result), file=sys.stdout)


if __name__ == "__main__":
    main()
