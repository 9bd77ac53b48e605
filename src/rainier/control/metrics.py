"""The control plane's Prometheus metrics: the queue, chips, outcomes, and the gateway.

What the database knows (queue length, chips in use, guarantees, preemptions, outcomes) is
read from it at each scrape by `StoreCollector`, so every server process answers the same
whatever its role; what only happens in a process (a job's wait ending at admission, a
gateway request) is counted there, in `ControlMetrics`: with several workers, sum over them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select

from rainier.control.state import quotas_of
from rainier.store.db import Store
from rainier.store.lifecycle import ALL_JOB_STATES, PLACED_JOB_STATES, TERMINAL_JOB_STATES, JobState
from rainier.store.tables import Contract, Deployment, Job, Node, ReplicaEndpoint, Tenant

WAIT_BUCKETS_S = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class StoreCollector:
    """Gauges and counters computed from the store at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        jobs = GaugeMetricFamily("rainier_jobs", "jobs by state", labels=["state"])
        queue = GaugeMetricFamily(
            "rainier_queue_length", "pending jobs and replicas", labels=["tenant", "flavor"]
        )
        oldest = GaugeMetricFamily(
            "rainier_queue_oldest_wait_seconds",
            "how long the longest-waiting pending workload has waited",
            labels=["tenant", "flavor"],
        )
        in_use = GaugeMetricFamily(
            "rainier_chips_in_use", "chips held by running work", labels=["tenant", "flavor"]
        )
        guaranteed = GaugeMetricFamily(
            "rainier_chips_guaranteed",
            "chips guaranteed by contracts in force",
            labels=["tenant", "flavor"],
        )
        borrowed = GaugeMetricFamily(
            "rainier_chips_borrowed",
            "chips in use beyond the guarantee (preemptible)",
            labels=["tenant", "flavor"],
        )
        capacity = GaugeMetricFamily(
            "rainier_cluster_chips", "chips of schedulable nodes", labels=["flavor"]
        )
        preemptions = CounterMetricFamily(
            "rainier_preemptions", "workloads preempted", labels=["tenant", "flavor"]
        )
        outcomes = CounterMetricFamily(
            "rainier_jobs_finished",
            "jobs ended, by outcome",
            labels=["tenant", "flavor", "outcome"],
        )
        with self.store.read() as s:
            names = {t.id: t.name for t in s.scalars(select(Tenant))}
            rows = s.execute(
                select(
                    Job.tenant_id,
                    Job.flavor,
                    Job.state,
                    func.count(),
                    func.sum(Job.nodes * Job.chips_per_node),
                    func.sum(Job.preemptions),
                    func.min(Job.created_at),
                ).group_by(Job.tenant_id, Job.flavor, Job.state)
            ).all()
            contracts = s.scalars(
                select(Contract).where(Contract.term_start <= now, Contract.term_end > now)
            ).all()
            quotas = quotas_of(contracts, names)
            replicas = s.execute(
                select(
                    Deployment.tenant_id,
                    Deployment.name,
                    Deployment.desired_replicas,
                    select(func.count())
                    .where(
                        ReplicaEndpoint.deployment_id == Deployment.id,
                        ReplicaEndpoint.ready.is_(True),
                    )
                    .scalar_subquery(),
                )
            ).all()
            chips = s.execute(
                select(Node.flavor, func.sum(Node.chips))
                .where(Node.schedulable.is_(True))
                .group_by(Node.flavor)
            ).all()
        by_state: dict[str, int] = dict.fromkeys(ALL_JOB_STATES, 0)
        used: dict[tuple[str, str], int] = {}
        preempted: dict[tuple[str, str], int] = {}
        waiting: dict[tuple[str, str], tuple[int, float]] = {}
        for tenant_id, flavor, state, count, chip_sum, preempt_sum, first in rows:
            tenant = names.get(tenant_id, tenant_id)
            key = (tenant, flavor)
            by_state[state] = by_state.get(state, 0) + count
            preempted[key] = preempted.get(key, 0) + int(preempt_sum or 0)
            if state == JobState.PENDING:
                first = first if first.tzinfo else first.replace(tzinfo=UTC)
                waiting[key] = (count, max(0.0, (now - first).total_seconds()))
            elif state in PLACED_JOB_STATES:
                used[key] = used.get(key, 0) + int(chip_sum or 0)
            elif state in TERMINAL_JOB_STATES:
                outcomes.add_metric([tenant, flavor, state], count)
        for name, count in by_state.items():
            jobs.add_metric([name], count)
        for key in sorted(preempted):  # every pair that ever had work: an empty queue is a 0
            count, age = waiting.get(key, (0, 0.0))
            queue.add_metric(list(key), count)
            oldest.add_metric(list(key), age)
        promised = {(q.tenant, f): n for q in quotas for f, n in q.guaranteed_chips.items()}
        for key in sorted(set(used) | set(promised)):
            in_use.add_metric(list(key), used.get(key, 0))
            guaranteed.add_metric(list(key), promised.get(key, 0))
            borrowed.add_metric(list(key), max(0, used.get(key, 0) - promised.get(key, 0)))
        for key, n in sorted(preempted.items()):
            preemptions.add_metric(list(key), n)
        for flavor, n in chips:
            capacity.add_metric([flavor], int(n or 0))
        deployments = GaugeMetricFamily(
            "rainier_deployment_replicas",
            "a deployment's replicas: desired, and ready (answering probes)",
            labels=["tenant", "deployment", "state"],
        )
        for tenant_id, name, desired, ready in replicas:
            tenant = names.get(tenant_id, tenant_id)
            deployments.add_metric([tenant, name, "desired"], desired)
            deployments.add_metric([tenant, name, "ready"], ready)
        yield from (jobs, queue, oldest, in_use, guaranteed, borrowed, capacity, deployments)
        yield from (preemptions, outcomes)


class ControlMetrics:
    """One server process's registry: the store's view plus what this process counted."""

    def __init__(self, store: Store | None = None) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        if store is not None:
            r.register(StoreCollector(store))
        self.ticks = Gauge("rainier_reconciler_ticks", "reconciler ticks", registry=r)
        self.queue_wait = Histogram(
            "rainier_queue_wait_seconds",
            "from submission to first admission",
            ["tenant", "flavor"],
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )
        self.requests = Counter(
            "rainier_gateway_requests",
            "requests answered by the /v1 gateway, by HTTP status",
            ["tenant", "deployment", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "rainier_gateway_request_duration_seconds",
            "from a request's arrival to its answer's start (a stream's first bytes)",
            ["tenant", "deployment"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tokens = Counter(
            "rainier_gateway_tokens",
            "tokens metered by the gateway",
            ["tenant", "deployment", "kind"],
            registry=r,
        )
        self.errors = Counter(
            "rainier_gateway_errors",
            "requests that failed, by OpenAI error type",
            ["tenant", "deployment", "type"],
            registry=r,
        )

    def admitted(self, tenant: str, flavor: str, waited_s: float) -> None:
        self.queue_wait.labels(tenant, flavor).observe(max(0.0, waited_s))

    def answered(
        self, tenant: str, deployment: str, status: int, started: float, error: str = ""
    ) -> None:
        """Deployment names are a tenant's own: two tenants' `chat` are two series."""
        self.requests.labels(tenant, deployment, str(status)).inc()
        self.latency.labels(tenant, deployment).observe(time.perf_counter() - started)
        if error:
            self.errors.labels(tenant, deployment, error).inc()

    def metered(self, tenant: str, deployment: str, prompt: int, completion: int) -> None:
        self.tokens.labels(tenant, deployment, "prompt").inc(prompt)
        self.tokens.labels(tenant, deployment, "completion").inc(completion)
