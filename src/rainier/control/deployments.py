"""The deployment controller: keeps each deployment's replicas running, ready and sized to its
load. The model registry is `registry.py`, applying documents and what a replica runs
`replicas.py`, what probing a replica finds `replica_probe.py`; their
names are also importable from here.

A replica is an ordinary Job row (`kind="replica"`, `deployment_id` set) running
`python -m rainier.serve --model DIR --port 0` (or vLLM behind `rainier.engines.vllm_replica`),
so the scheduler places it as a one-node gang and the executor starts, restarts and stops it
like any task. The replica binds a port of the OS's choosing and registers it with the control
plane over HTTP with its job token (`rainier.control.task_endpoints`), per attempt. The
controller health-checks the address the current attempt registered and asks it for its load.
What it learns is kept in `replica_endpoints`, which the gateway reads: the table, not the
leader's memory, is how any server's gateway finds replicas. Nothing is read from the
replica's node but over the network.

Scaling follows the sum of requests running and waiting on the replicas (`GET /load`) divided
by the deployment's target per replica, between its min and max: up at once, down only after
`RAINIER_SCALE_DOWN_AFTER_S` (60 s by default) of less load. A replica let go is first taken
out of the gateway's choice and stopped once it has no request left.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.config import Settings
from rainier.control.executor import Executor
from rainier.control.registry import (
    ModelRefError,
    ResolvedModel,
    find_model,
    register_model,
    resolve_model,
)
from rainier.control.replica_probe import ProbeResult, ProbeTarget, ReplicaHealth
from rainier.control.replicas import (
    MODEL_ENV,
    REPLICA_GRACE_S,
    REPLICA_MAX_RESTARTS,
    REVISION_ENV,
    SERVE_MODULE,
    apply_deployment,
    delete_deployment,
    deployment_event,
    replica_name,
    replica_spec,
    revision_of,
    stop_replica,
)
from rainier.control.scaling import scale_deployment
from rainier.control.stored import deployment_spec
from rainier.control.task_endpoints import serving_url
from rainier.engines.replica_load import replica_load
from rainier.store.db import Store
from rainier.store.lifecycle import (
    LIVE_JOB_STATES,
    JobState,
    TaskState,
    is_leaving,
    is_stop_requested,
)
from rainier.store.tables import (
    Deployment,
    Event,
    Job,
    ReplicaEndpoint,
    Task,
    new_id,
    utcnow,
)

__all__ = [
    "MODEL_ENV",
    "REPLICA_GRACE_S",
    "REPLICA_MAX_RESTARTS",
    "REVISION_ENV",
    "SERVE_MODULE",
    "DeploymentController",
    "ModelRefError",
    "ProbeResult",
    "ProbeTarget",
    "ResolvedModel",
    "apply_deployment",
    "delete_deployment",
    "find_model",
    "register_model",
    "replica_spec",
    "resolve_model",
    "stop_replica",
]

log = logging.getLogger("rainier.deployments")

FAILED_REPLICA_BACKOFF_S = 60.0
# How long a replica waiting to be placed still counts as coming up (see `_autoscale`).
PLACEMENT_GRACE_S = 60.0


@dataclass
class _Scaling:
    quiet_since: float | None = None
    quiet_max: int = 0


@dataclass
class _Drain:
    since: float
    idle: bool = False


@dataclass
class DeploymentController:
    """Run by the reconciler's leader once per tick; probing runs in a thread of its own so a
    slow replica never holds up scheduling."""

    store: Store
    executor: Executor
    settings: Settings
    # Replicas are probed often while a deployment is settling (a replica coming up, draining,
    # missing or failing a probe) and once a second once every one is ready and answering: an idle control plane probing
    # four times a second took several percent of a core from the replicas on a small machine.
    probe_interval_s: float = 0.25
    steady_probe_interval_s: float = 1.0
    probe_timeout_s: float = 5.0
    unready_after_failures: int = 3
    scale_down_after_s: float = field(
        default_factory=lambda: float(os.environ.get("RAINIER_SCALE_DOWN_AFTER_S", "60"))
    )
    drain_timeout_s: float = 30.0
    _seen: dict[str, ReplicaHealth] = field(default_factory=dict)
    _scaling: dict[str, _Scaling] = field(default_factory=dict)
    _draining: dict[str, _Drain] = field(default_factory=dict)
    _round: threading.Thread | None = None
    _results: list[ProbeResult] | None = None
    _last_round: float = 0.0
    _settling: bool = True
    # One client for every round: a new one builds an SSL context, milliseconds of CPU under
    # the GIL four times a second, which the gateway in this process felt as latency.
    _http: httpx.Client | None = None

    def tick(self) -> None:
        now = time.monotonic()
        if self._round is not None:
            if self._round.is_alive():
                return
            self._round = None
            results, self._results = self._results or [], None
            self._record(results)
            self._autoscale(now)
        interval = self.probe_interval_s if self._settling else self.steady_probe_interval_s
        if now - self._last_round < interval:
            return
        self._last_round = now
        self._settling = False
        self._converge(now)
        self._round = threading.Thread(
            target=self._probe_round, args=(self._targets(),), name="replica-probe", daemon=True
        )
        self._round.start()

    # -- probing ---------------------------------------------------------------------------

    def _targets(self) -> list[ProbeTarget]:
        with self.store.read() as s:
            rows = s.execute(
                select(Job, Task)
                .join(Task, (Task.job_id == Job.id) & (Task.attempt == Job.attempt))
                .where(
                    Job.kind == "replica",
                    Job.state == JobState.RUNNING,
                    Task.state == TaskState.RUNNING,
                )
            ).all()
        return [
            ProbeTarget(
                job_id=job.id,
                deployment_id=job.deployment_id or "",
                attempt=job.attempt,
                log_path=self.settings.logs_dir / job.id / f"rank-{task.rank}.log",
                address=self.executor.node_address(task.node),
            )
            for job, task in rows
        ]

    def _probe_round(self, targets: list[ProbeTarget]) -> None:
        if not targets:
            self._results = []
            return
        if self._http is None:
            self._http = httpx.Client(timeout=self.probe_timeout_s)
        http = self._http
        try:
            with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
                found = list(pool.map(lambda t: self._probe(http, t), targets))
        except Exception:
            log.exception("probing replicas failed; trying again next round")
            return
        self._results = [r for r in found if r is not None]

    def _probe(self, http: httpx.Client, target: ProbeTarget) -> ProbeResult | None:
        seen = self._seen.get(target.job_id)
        if seen is None or seen.attempt != target.attempt:
            seen = ReplicaHealth(target.attempt)
            self._seen[target.job_id] = seen
        url = serving_url(self.store, target.job_id, target.attempt)
        if url is None:
            return None
        try:
            answer = http.get(f"{url}/health")
            healthy = answer.status_code == 200
            running, waiting = replica_load(http, url, answer) if healthy else (0, 0)
        except (httpx.HTTPError, ValueError, TypeError, AttributeError):
            healthy, running, waiting = False, 0, 0
        return ProbeResult(
            target.job_id, target.deployment_id, target.attempt, url, healthy, running, waiting
        )

    def _record(self, results: list[ProbeResult]) -> None:
        """Writes what the round saw; a replica that was ready stays so through a few failed
        probes (a busy CPU answers late), since the gateway retries elsewhere meanwhile."""
        now = utcnow()
        with self.store.write() as s:
            for r in results:
                seen = self._seen.get(r.job_id)
                if seen is not None:
                    seen.failures = 0 if r.healthy else seen.failures + 1
                job = s.get(Job, r.job_id)
                if job is None or job.attempt != r.attempt or is_stop_requested(job):
                    continue
                row = s.get(ReplicaEndpoint, r.job_id)
                if row is None:
                    row = ReplicaEndpoint(job_id=r.job_id, deployment_id=r.deployment_id)
                    s.add(row)
                fresh = row.attempt != r.attempt or row.url != r.url
                failing = seen is not None and seen.failures >= self.unready_after_failures
                ready = r.healthy or (bool(row.ready) and not fresh and not failing)
                if r.job_id in self._draining:
                    ready = False
                    self._draining[r.job_id].idle = r.healthy and r.running + r.waiting == 0
                if ready and not row.ready:
                    s.add(
                        Event(
                            object_id=r.deployment_id,
                            tenant_id=job.tenant_id,
                            kind="replica-ready",
                            message=f"replica {job.name} ready at {r.url}",
                        )
                    )
                row.attempt, row.url, row.ready = r.attempt, r.url, ready
                self._settling = (
                    self._settling or not (ready and r.healthy) or r.job_id in self._draining
                )
                if r.healthy or fresh:
                    row.running, row.waiting, row.checked_at = r.running, r.waiting, now

    # -- scaling ---------------------------------------------------------------------------

    def _autoscale(self, now: float) -> None:
        """Up at once to cover the load; down only after `scale_down_after_s` of less load,
        to the most that quiet window needed (so to `min` when idle). A replica too busy to
        answer a probe counts with the load it last reported, not as idle; and no quiet window
        starts while a placed replica is still coming up, since requests wait for it at the
        gateway (a deployment woken from zero would otherwise sleep again under its first
        request). A replica still waiting to be placed counts as coming up for its first
        `PLACEMENT_GRACE_S` (on a busy control plane placing it can take longer than the quiet
        window); after that it is taken to have found no room, and does not hold the
        deployment up.
        """
        with self.store.write() as s:
            deployments = s.scalars(select(Deployment)).all()
            loads: dict[str, int] = {}
            ready: set[str] = set()
            for e in s.scalars(select(ReplicaEndpoint)):
                if e.job_id not in self._draining:
                    loads[e.deployment_id] = loads.get(e.deployment_id, 0) + e.running + e.waiting
                    if e.ready:
                        ready.add(e.job_id)
            placed_since = utcnow() - timedelta(seconds=PLACEMENT_GRACE_S)
            coming_up = {
                dep_id
                for job_id, dep_id, state, created_at in s.execute(
                    select(Job.id, Job.deployment_id, Job.state, Job.created_at).where(
                        Job.kind == "replica",
                        Job.state.in_((JobState.PENDING, JobState.RUNNING)),
                    )
                )
                if job_id not in ready
                and job_id not in self._draining
                and (state == JobState.RUNNING or created_at >= placed_since)
            }
            for dep in deployments:
                doc = deployment_spec(dep)
                load = loads.get(dep.id, 0)
                wanted = math.ceil(load / doc.target_inflight_per_replica)
                wanted = min(max(wanted, doc.replicas.min), doc.replicas.max)
                state = self._scaling.setdefault(dep.id, _Scaling())
                if wanted >= dep.desired_replicas or dep.id in coming_up:
                    state.quiet_since = None
                    if wanted > dep.desired_replicas:
                        scale_deployment(s, dep, wanted, f"in-flight {load}")
                    continue
                if state.quiet_since is None:
                    state.quiet_since, state.quiet_max = now, wanted
                state.quiet_max = max(state.quiet_max, wanted)
                since_scaled = (utcnow() - dep.scaled_at).total_seconds()
                if (
                    now - state.quiet_since >= self.scale_down_after_s
                    and since_scaled >= self.scale_down_after_s
                ):
                    scale_deployment(s, dep, state.quiet_max, f"in-flight {load}")
                    state.quiet_since = None
            for dep_id in set(self._scaling) - {d.id for d in deployments}:
                del self._scaling[dep_id]

    # -- converging replicas on the desired count ------------------------------------------

    def _converge(self, now: float) -> None:
        with self.store.write() as s:
            deployments = {d.id: d for d in s.scalars(select(Deployment))}
            replicas = s.scalars(
                select(Job)
                .where(Job.kind == "replica", Job.state.in_(LIVE_JOB_STATES))
                .order_by(Job.id)
            ).all()
            endpoints = {e.job_id: e for e in s.scalars(select(ReplicaEndpoint))}
            by_dep: dict[str, list[Job]] = {}
            for job in replicas:
                if is_leaving(job):
                    continue
                if job.deployment_id not in deployments:
                    stop_replica(s, job, "its deployment is gone")
                    continue
                by_dep.setdefault(job.deployment_id or "", []).append(job)
            for dep in deployments.values():
                self._converge_one(s, dep, by_dep.get(dep.id, []), endpoints, now)
            live = {j.id: j.attempt for j in replicas}
            for job_id, row in endpoints.items():
                if live.get(job_id) != row.attempt:
                    s.delete(row)
            for job_id in set(self._draining) - set(live):
                del self._draining[job_id]
            for job_id in set(self._seen) - set(live):
                self._seen.pop(job_id, None)

    def _converge_one(
        self,
        s: Session,
        dep: Deployment,
        jobs: Sequence[Job],
        endpoints: dict[str, ReplicaEndpoint],
        now: float,
    ) -> None:
        current = [j for j in jobs if revision_of(j) == dep.revision]
        old = [j for j in jobs if revision_of(j) != dep.revision]
        serving = [j for j in current if j.id not in self._draining]
        ready = [j for j in serving if (e := endpoints.get(j.id)) is not None and e.ready]
        missing = dep.desired_replicas - len(serving)
        if missing or old or len(ready) < dep.desired_replicas or len(serving) < len(current):
            self._settling = True
        if missing > 0:
            revived = [j for j in current if j.id in self._draining][:missing]
            for job in revived:
                del self._draining[job.id]
            missing -= len(revived)
            if missing > 0 and not self._backing_off(s, dep):
                self._create(s, dep, missing)
        elif missing < 0:
            self._drain(_victims(serving, endpoints, -missing), endpoints, now)
        if old and len(ready) >= dep.desired_replicas:
            self._drain(old, endpoints, now)
        for job in [*current, *old]:
            drain = self._draining.get(job.id)
            if drain is not None and (drain.idle or now - drain.since >= self.drain_timeout_s):
                stop_replica(s, job, f"scaled down: {dep.name} needs fewer replicas")

    def _drain(
        self, jobs: Iterable[Job], endpoints: dict[str, ReplicaEndpoint], now: float
    ) -> None:
        """Takes replicas out of the gateway's choice first and stops them once idle, so the
        requests they are serving finish."""
        for job in jobs:
            if job.id in self._draining:
                continue
            endpoint = endpoints.get(job.id)
            if endpoint is not None:
                endpoint.ready = False
            idle = endpoint is None or job.state == JobState.PENDING
            self._draining[job.id] = _Drain(since=now, idle=idle)

    def _backing_off(self, s: Session, dep: Deployment) -> bool:
        """A replica that used up its restarts points at a broken model or command: wait a
        while before trying again rather than spin."""
        since = utcnow() - timedelta(seconds=FAILED_REPLICA_BACKOFF_S)
        failed = s.scalars(
            select(Job.id)
            .where(
                Job.deployment_id == dep.id,
                Job.state == JobState.FAILED,
                Job.finished_at >= since,
            )
            .limit(1)
        ).first()
        return failed is not None

    def _create(self, s: Session, dep: Deployment, count: int) -> None:
        spec = replica_spec(dep, "127.0.0.1" if self.executor.name == "local" else "0.0.0.0")
        for _ in range(count):
            spec = spec.model_copy(update={"name": replica_name(dep.name)})
            job = Job(
                id=new_id("job"),
                tenant_id=dep.tenant_id,
                name=spec.name,
                kind="replica",
                deployment_id=dep.id,
                spec=spec.model_dump(mode="json"),
                flavor=spec.flavor,
                nodes=1,
                chips_per_node=spec.chips_per_node,
                priority=spec.priority,
                state=JobState.PENDING,
                reason="queued",
            )
            s.add(job)
            deployment_event(s, dep, "replica-created", f"replica {job.name} ({job.id}) queued")


def _victims(jobs: Sequence[Job], endpoints: dict[str, ReplicaEndpoint], count: int) -> list[Job]:
    """Which replicas to let go: those not serving yet first, then the least busy, newest."""

    def cost(job: Job) -> tuple[int, int]:
        e = endpoints.get(job.id)
        return (0, 0) if e is None or not e.ready else (1, e.running + e.waiting)

    newest_first = sorted(jobs, key=lambda j: j.id, reverse=True)
    return sorted(newest_first, key=cost)[:count]
