"""How fast the simulator replays a large trace on a large cluster with rainier's policy.

The cluster: trn2 and h200 pools of 16-chip nodes in blocks of 4 (UltraServers), 2 blocks a
rack, 2 zones; 20 tenants whose guarantees split 70% of each pool in proportion to the 20
largest virtual clusters of SenseTime's Venus cluster (Helios trace). The trace: jobs generated
from Philly's run times and job sizes (`rainier sim trace philly`) at 90% offered load. A few
hours of arrivals are short against Philly's tail of week-long jobs, so the cluster is still
filling up when the arrivals stop: the point is the replay speed, not a steady state.

The scheduler is called on a reconciler tick (`--tick`, default 60 s), as the live control plane
would; `--tick 0` calls it after every event.

The last line printed is JSON: jobs, wall_s (the replay alone), events_per_s,
sim_s_per_wall_s (simulated seconds per second of replay), peak_rss_mb (the whole process:
trace, replay and metrics), guarantee_violations, and the counts behind them. Targets on a
2-core machine: 100,000 jobs in under 60 s; 1,000,000 in under 15 minutes and 8 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from rainier.sim.engine import Simulation
from rainier.sim.generator import (
    GeneratorConfig,
    data_file,
    generate,
    read_runtimes,
    read_tenant_sizes,
)
from rainier.sim.metrics import summarize, window_average
from rainier.sim.model import Cluster, FlavorPool, TenantContract
from rainier.sim.policies import make_policy
from rainier.sim.records import SimConfig


def build_cluster(nodes: int, tenants: int) -> Cluster:
    half = nodes // 2
    pools = (
        FlavorPool("trn2", nodes - half, 16, nodes_per_block=4, blocks_per_rack=2, zones=2),
        FlavorPool("h200", half, 16, nodes_per_block=4, blocks_per_rack=2, zones=2),
    )
    sizes = read_tenant_sizes(data_file("helios_venus_vc_gpus.csv"))
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:tenants]
    total = sum(size for _, size in largest)
    contracts = tuple(
        TenantContract(
            name,
            {p.flavor: int(0.7 * p.chips * size / total) for p in pools},
            borrow_limit_chips=None
            if i % 2 == 0
            else {p.flavor: int(0.35 * p.chips * size / total) for p in pools},
        )
        for i, (name, size) in enumerate(largest)
    )
    return Cluster(pools, contracts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=31_250, help="16-chip nodes (500,000 chips)")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--tick", type=float, default=60.0)
    parser.add_argument("--load", type=float, default=0.9)
    parser.add_argument("--policy", default="rainier")
    args = parser.parse_args()

    began = time.perf_counter()
    cluster = build_cluster(args.nodes, args.tenants)
    trace = generate(
        read_runtimes(data_file("philly_runtime.csv")),
        read_tenant_sizes(data_file("helios_venus_vc_gpus.csv")),
        cluster,
        GeneratorConfig(jobs=args.jobs, seed=1, load=args.load),
    )
    policy = make_policy(args.policy, trace)
    config = SimConfig(
        queue_window=policy.queue_window, tick_s=args.tick, skip_when_full=not policy.preempts
    )
    started = time.perf_counter()
    result = Simulation(cluster, trace, policy.scheduler, args.policy, config).run()
    wall = time.perf_counter() - started
    s = summarize(result)
    total = time.perf_counter() - began
    arriving_s = max(j.submit_s for j in trace.jobs)
    busy = {
        f: window_average(tl, 0.0, arriving_s) / result.capacity_chips[f]
        for f, tl in result.utilization.items()
    }
    print(
        f"{args.policy}: {s['completed']}/{s['jobs']} jobs, mean wait {s['wait_s']['mean']:.0f}s, "
        f"utilization while jobs arrive {', '.join(f'{f} {100 * u:.1f}%' for f, u in busy.items())}, "
        f"preemptions {s['preemptions']}, guarantee violations {s['guarantee_violations']}",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "jobs": len(trace.jobs),
                "wall_s": round(wall, 2),
                "events_per_s": round(result.events / wall, 1),
                "sim_s_per_wall_s": round(result.end_s / wall, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "guarantee_violations": s["guarantee_violations"],
                "total_s": round(total, 2),
                "chips": sum(p.chips for p in cluster.pools),
                "nodes": args.nodes,
                "tenants": len(cluster.tenants),
                "events": result.events,
                "scheduler_calls": result.scheduler_calls,
                "simulated_days": round(result.end_s / 86400, 1),
                "completed": s["completed"],
                "mean_wait_s": round(s["wait_s"]["mean"], 1),
                "preemptions": s["preemptions"],
                "policy": args.policy,
                "tick_s": args.tick,
            }
        )
    )


if __name__ == "__main__":
    main()
