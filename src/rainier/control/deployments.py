"""Models and deployments: the registry, applying Deployment documents, and the controller that
keeps each deployment's replicas running, ready and sized to its load.

A replica is an ordinary Job row (`kind="replica"`, `deployment_id` set) running
`python -m rainier.serve --model DIR --port 0`, so the scheduler places it as a one-node gang and
the executor starts, restarts and stops it like any task. The serving runtime binds a port of the
OS's choosing and registers it with the control plane over HTTP with its job token
(`rainier.control.task_endpoints`), per attempt. The controller health-checks the address the
current attempt registered and asks it for its load. What it learns is kept in
`replica_endpoints`, which the gateway reads: the table, not the leader's memory, is how any
server's gateway finds replicas. Nothing is read from the replica's node but over the network.

Scaling follows the sum of requests running and waiting on the replicas (`GET /load`) divided
by the deployment's target per replica, between its min and max: up at once, down only after
`RAINIER_SCALE_DOWN_AFTER_S` (60 s by default) of less load. A replica let go is first taken
out of the gateway's choice and stopped once it has no request left.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rainier.config import Settings
from rainier.control.executor import Executor
from rainier.control.task_endpoints import serving_url
from rainier.spec import NAME_PATTERN, DeploymentSpec, JobSpec
from rainier.store.db import Store
from rainier.store.tables import (
    TERMINAL_STATES,
    Deployment,
    Event,
    Job,
    Model,
    ReplicaEndpoint,
    Task,
    new_id,
    utcnow,
)

log = logging.getLogger("rainier.deployments")

SERVE_MODULE = "rainier.serve"
REPLICA_MAX_RESTARTS = 100
REPLICA_GRACE_S = 15.0
REVISION_ENV = "RAINIER_DEPLOYMENT_REVISION"
MODEL_ENV = "RAINIER_MODEL"
LIVE_JOB_STATES = ("pending", "running", "stopping")
FAILED_REPLICA_BACKOFF_S = 60.0
# How long a replica waiting to be placed still counts as coming up (see `_autoscale`).
PLACEMENT_GRACE_S = 60.0
_VERSIONED = re.compile(r"^(?P<name>[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(:(?P<version>[0-9]+))?$")


class ModelRefError(ValueError):
    """A model reference that names nothing the tenant has; the message says which."""


# -- the model registry -----------------------------------------------------------------------


def register_model(
    s: Session, tenant_id: str, name: str, path: str, job_id: str | None = None
) -> Model:
    """The next version of `name` in the tenant, for a folder the caller checked the tenant
    owns (`rainier.control.ownership`); the caller retries on IntegrityError, which two
    concurrent registrations of one name cause on databases without a write lock."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ModelRefError(f"model name {name!r} must be lowercase letters, digits and '-'")
    last = s.scalar(
        select(func.max(Model.version)).where(Model.tenant_id == tenant_id, Model.name == name)
    )
    row = Model(
        id=new_id("mdl"),
        tenant_id=tenant_id,
        name=name,
        version=(last or 0) + 1,
        path=path,
        job_id=job_id,
    )
    s.add(row)
    s.flush()
    return row


def find_model(s: Session, tenant_id: str, name: str, version: int | None = None) -> Model | None:
    query = select(Model).where(Model.tenant_id == tenant_id, Model.name == name)
    if version is not None:
        query = query.where(Model.version == version)
    return s.scalars(query.order_by(Model.version.desc()).limit(1)).first()


@dataclass(frozen=True)
class ResolvedModel:
    ref: str
    path: str


def resolve_model(
    s: Session, tenant_id: str, ref: str, owned: Callable[[str], str]
) -> ResolvedModel:
    """`name[:version]` of the tenant's registry (newest version when none is given), or an
    absolute path of a folder the tenant owns (`owned` answers it resolved, or raises).
    Resolved once, when the deployment is applied: a new model version reaches a deployment
    when the deployment is applied again, never behind its back."""
    if "/" in ref:
        path = owned(ref)
        return ResolvedModel(path, path)
    match = _VERSIONED.fullmatch(ref)
    if match is None:
        raise ModelRefError(f"{ref!r} is neither a model name[:version] nor an absolute path")
    name, version = match["name"], match["version"]
    row = find_model(s, tenant_id, name, int(version) if version else None)
    if row is None:
        raise ModelRefError(f"model {ref!r} is not registered in this tenant")
    return ResolvedModel(f"{row.name}:{row.version}", row.path)


# -- applying and deleting deployments ---------------------------------------------------------


def _replica_fields(doc: DeploymentSpec, model: ResolvedModel) -> dict[str, object]:
    return {
        "model": model.ref,
        "path": model.path,
        "flavor": doc.flavor,
        "chips": doc.chips_per_replica,
        "priority": doc.priority,
        "max_batch_tokens": doc.max_batch_tokens,
    }


def apply_deployment(
    s: Session, tenant_id: str, doc: DeploymentSpec, owned: Callable[[str], str]
) -> tuple[Deployment, bool]:
    """Creates the deployment or updates the one of that name; True when created.

    Changes to what a replica runs bump the revision, and the controller rolls replicas over
    to it; changes to scaling and rate limits apply to the running replicas as they are.
    """
    model = resolve_model(s, tenant_id, doc.model, owned)
    spec = doc.model_dump(mode="json")
    row = s.scalars(
        select(Deployment).where(Deployment.tenant_id == tenant_id, Deployment.name == doc.name)
    ).one_or_none()
    now = utcnow()
    if row is None:
        row = Deployment(
            id=new_id("dep"),
            tenant_id=tenant_id,
            name=doc.name,
            spec=spec,
            model=model.ref,
            model_path=model.path,
            revision=1,
            desired_replicas=doc.replicas.min,
            scaled_at=now,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        s.flush()
        _event(s, row, "created", f"serving {model.ref} with {doc.replicas.min} replica(s)")
        return row, True
    before = DeploymentSpec.model_validate(row.spec)
    if _replica_fields(before, ResolvedModel(row.model, row.model_path)) != _replica_fields(
        doc, model
    ):
        row.revision += 1
        _event(s, row, "updated", f"revision {row.revision}: serving {model.ref}")
    else:
        _event(s, row, "updated", "scaling and limits updated")
    row.spec, row.model, row.model_path, row.updated_at = spec, model.ref, model.path, now
    desired = min(max(row.desired_replicas, doc.replicas.min), doc.replicas.max)
    if desired != row.desired_replicas:
        row.desired_replicas, row.scaled_at = desired, now
    return row, False


def stop_replica(s: Session, job: Job, reason: str) -> None:
    """Asks a replica to exit (SIGTERM, then SIGKILL after its grace period), as `stop` does."""
    if job.state in TERMINAL_STATES or job.stop_requested:
        return
    if job.state == "pending":
        job.state, job.reason, job.finished_at = "stopped", reason, utcnow()
    else:
        job.state, job.reason, job.stop_requested = "stopping", reason, True
    s.add(Event(object_id=job.id, tenant_id=job.tenant_id, kind="stop", message=reason))
    endpoint = s.get(ReplicaEndpoint, job.id)
    if endpoint is not None:
        s.delete(endpoint)


def delete_deployment(s: Session, row: Deployment) -> int:
    """Stops every replica and forgets the deployment; returns how many replicas were stopped.
    Token usage keeps the deployment's id and name, so what was served stays billable."""
    replicas = s.scalars(
        select(Job).where(Job.deployment_id == row.id, Job.state.in_(LIVE_JOB_STATES))
    ).all()
    for job in replicas:
        stop_replica(s, job, f"deployment {row.name} deleted")
    _event(s, row, "deleted", f"deployment deleted; {len(replicas)} replica(s) stopping")
    s.delete(row)
    return len(replicas)


def replica_spec(row: Deployment, host: str = "127.0.0.1") -> JobSpec:
    """What a replica runs; `host` is the address it listens on (all of them when the gateway
    reaches it from another machine)."""
    doc = DeploymentSpec.model_validate(row.spec)
    command = [
        sys.executable,
        "-m",
        SERVE_MODULE,
        "--model",
        row.model_path,
        "--host",
        host,
        "--port",
        "0",
        "--served-model-name",
        row.name,
        "--max-batch-tokens",
        str(doc.max_batch_tokens),
    ]
    if doc.flavor == "cpu" and doc.chips_per_replica > 0:
        command += ["--torch-threads", str(doc.chips_per_replica)]
    return JobSpec(
        name=_replica_name(row.name),
        command=command,
        env={"RAINIER_DEPLOYMENT": row.name, REVISION_ENV: str(row.revision), MODEL_ENV: row.model},
        flavor=doc.flavor,
        nodes=1,
        chips_per_node=doc.chips_per_replica,
        priority=doc.priority,
        max_restarts=REPLICA_MAX_RESTARTS,
        grace_period_s=REPLICA_GRACE_S,
    )


def _replica_name(deployment: str) -> str:
    return f"{deployment[:54].rstrip('-')}-{os.urandom(4).hex()}"


def _revision_of(job: Job) -> int:
    try:
        return int(job.spec.get("env", {}).get(REVISION_ENV, 0))
    except (TypeError, ValueError):
        return 0


def _event(s: Session, row: Deployment, kind: str, message: str) -> None:
    """Records a deployment's change, and says it in the server's log: one line per change."""
    s.add(Event(object_id=row.id, tenant_id=row.tenant_id, kind=kind, message=message))
    log.info("deployment %s (%s) %s: %s", row.name, row.id, kind, message)


# -- finding and probing replicas ---------------------------------------------------------------


@dataclass(frozen=True)
class ProbeTarget:
    job_id: str
    deployment_id: str
    attempt: int
    log_path: Path
    address: str


@dataclass(frozen=True)
class ProbeResult:
    job_id: str
    deployment_id: str
    attempt: int
    url: str
    healthy: bool
    running: int = 0
    waiting: int = 0


@dataclass
class _Seen:
    """How many probes of a replica's attempt failed in a row."""

    attempt: int
    failures: int = 0


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
    _seen: dict[str, _Seen] = field(default_factory=dict)
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
                    Job.state == "running",
                    Job.stop_requested.is_(False),
                    Task.state == "running",
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
            seen = _Seen(target.attempt)
            self._seen[target.job_id] = seen
        url = serving_url(self.store, target.job_id, target.attempt)
        if url is None:
            return None
        try:
            answer = http.get(f"{url}/health")
            healthy = answer.status_code == 200
            load = answer.json() if healthy else {}
            running, waiting = int(load.get("running", 0)), int(load.get("waiting", 0))
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
                if job is None or job.attempt != r.attempt or job.stop_requested:
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
                        Job.state.in_(("pending", "running")),
                        Job.stop_requested.is_(False),
                    )
                )
                if job_id not in ready
                and job_id not in self._draining
                and (state == "running" or created_at >= placed_since)
            }
            for dep in deployments:
                doc = DeploymentSpec.model_validate(dep.spec)
                load = loads.get(dep.id, 0)
                wanted = math.ceil(load / doc.target_inflight_per_replica)
                wanted = min(max(wanted, doc.replicas.min), doc.replicas.max)
                state = self._scaling.setdefault(dep.id, _Scaling())
                if wanted >= dep.desired_replicas or dep.id in coming_up:
                    state.quiet_since = None
                    if wanted > dep.desired_replicas:
                        self._scale(s, dep, wanted, f"in-flight {load}")
                    continue
                if state.quiet_since is None:
                    state.quiet_since, state.quiet_max = now, wanted
                state.quiet_max = max(state.quiet_max, wanted)
                since_scaled = (utcnow() - dep.scaled_at).total_seconds()
                if (
                    now - state.quiet_since >= self.scale_down_after_s
                    and since_scaled >= self.scale_down_after_s
                ):
                    self._scale(s, dep, state.quiet_max, f"in-flight {load}")
                    state.quiet_since = None
            for dep_id in set(self._scaling) - {d.id for d in deployments}:
                del self._scaling[dep_id]

    def _scale(self, s: Session, dep: Deployment, replicas: int, why: str) -> None:
        word = "up" if replicas > dep.desired_replicas else "down"
        _event(s, dep, f"scaled-{word}", f"{dep.desired_replicas} -> {replicas} replicas ({why})")
        dep.desired_replicas, dep.scaled_at = replicas, utcnow()

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
                if job.stop_requested or job.state == "stopping":
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
        current = [j for j in jobs if _revision_of(j) == dep.revision]
        old = [j for j in jobs if _revision_of(j) != dep.revision]
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
            idle = endpoint is None or job.state == "pending"
            self._draining[job.id] = _Drain(since=now, idle=idle)

    def _backing_off(self, s: Session, dep: Deployment) -> bool:
        """A replica that used up its restarts points at a broken model or command: wait a
        while before trying again rather than spin."""
        since = utcnow() - timedelta(seconds=FAILED_REPLICA_BACKOFF_S)
        failed = s.scalars(
            select(Job.id)
            .where(
                Job.deployment_id == dep.id,
                Job.state == "failed",
                Job.finished_at >= since,
            )
            .limit(1)
        ).first()
        return failed is not None

    def _create(self, s: Session, dep: Deployment, count: int) -> None:
        spec = replica_spec(dep, "127.0.0.1" if self.executor.name == "local" else "0.0.0.0")
        for _ in range(count):
            spec = spec.model_copy(update={"name": _replica_name(dep.name)})
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
                state="pending",
                reason="queued",
            )
            s.add(job)
            _event(s, dep, "replica-created", f"replica {job.name} ({job.id}) queued")


def _victims(jobs: Sequence[Job], endpoints: dict[str, ReplicaEndpoint], count: int) -> list[Job]:
    """Which replicas to let go: those not serving yet first, then the least busy, newest."""

    def cost(job: Job) -> tuple[int, int]:
        e = endpoints.get(job.id)
        return (0, 0) if e is None or not e.ready else (1, e.running + e.waiting)

    newest_first = sorted(jobs, key=lambda j: j.id, reverse=True)
    return sorted(newest_first, key=cost)[:count]
