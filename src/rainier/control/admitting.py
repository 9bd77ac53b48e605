"""The handler of pending jobs: the scheduler's pass over the queue, persisted before anything
acts on it. An admitted job becomes `running` with one `starting` task per rank; a preempted
one becomes `stopping` (cause `preempted`); a waiting one gets the scheduler's reason."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from rainier.control.isolation import schedule_isolated
from rainier.control.job_events import finish, job_event
from rainier.control.state import cluster_state
from rainier.scheduler import Admit, ClusterState, Decisions, Scheduler, Workload
from rainier.scheduler.chips import assign_gang, held_chips
from rainier.store.db import Store
from rainier.store.lifecycle import PLACED_JOB_STATES, JobState, StopCause, TaskState, move_job
from rainier.store.tables import Job, Node, Task, utcnow

AdmitHook = Callable[[str, str, float], None]  # tenant, flavor, seconds waited


class PendingJobs:
    def __init__(self, store: Store, scheduler: Scheduler, on_admit: AdmitHook | None = None):
        self.store = store
        self.scheduler = scheduler
        self.on_admit = on_admit
        self.workloads: dict[str, Workload] = {}
        self.reasons: dict[str, str] = {}

    def cluster_state(self, s: Session, now_s: float) -> ClusterState:
        return cluster_state(s, now_s, self.workloads, self.reasons)

    def step(self) -> tuple[int, int]:
        """One scheduling pass; how many jobs were admitted and preempted."""
        now_s = time.time()
        with self.store.read() as s:
            state = self.cluster_state(s, now_s)
        if not state.pending:
            return 0, 0
        isolated = schedule_isolated(self.scheduler, state)
        if isolated.failed:
            self._fail_unschedulable(isolated.failed)
        return self._persist(isolated.decisions)

    def _fail_unschedulable(self, failed: dict[str, str]) -> None:
        """Pending jobs the scheduler fails on: failed with the error, so the others go on."""
        now = utcnow()
        with self.store.write() as s:
            for job in s.scalars(select(Job).where(Job.id.in_(list(failed)))):
                if job.state == JobState.PENDING:
                    reason = f"the scheduler cannot consider this job: {failed[job.id]}"
                    finish(s, job, JobState.FAILED, reason[:1000], now)

    def _persist(self, decisions: Decisions) -> tuple[int, int]:
        if (
            not decisions.admit
            and not decisions.preempt
            and all(self.reasons.get(w.workload_id) == w.reason for w in decisions.wait)
        ):
            return 0, 0  # nothing to write: don't take the write lock from submissions
        admitted = preempted = 0
        with self.store.write() as s:
            held, sizes = chips_in_use(s) if decisions.admit else ({}, {})
            for admit in decisions.admit:
                admitted += self._admit(s, admit, held, sizes)
            for pre in decisions.preempt:
                job = s.get(Job, pre.workload_id)
                if job is None or job.state != JobState.RUNNING:
                    continue
                move_job(job, JobState.STOPPING, StopCause.PREEMPTED)
                job.reason = pre.reason
                job_event(s, job.id, job.tenant_id, "preempting", pre.reason)
                preempted += 1
            self._record_reasons(s, decisions)
        return admitted, preempted

    def _admit(
        self, s: Session, admit: Admit, held: dict[str, set[int]], sizes: dict[str, int]
    ) -> int:
        job = s.get(Job, admit.workload_id)
        if job is None or job.state != JobState.PENDING:
            return 0
        now = utcnow()
        move_job(job, JobState.RUNNING)
        job.placement = {
            "nodes": list(admit.node_names),
            "chips": assign_gang(admit.node_names, job.chips_per_node, sizes, held),
        }
        job.started_at = now
        job.reason = admit.reason
        for rank, node in enumerate(admit.node_names):
            s.add(
                Task(
                    id=f"{job.id}.a{job.attempt}.r{rank}",
                    job_id=job.id,
                    attempt=job.attempt,
                    rank=rank,
                    node=node,
                    chips=job.chips_per_node,
                    state=TaskState.STARTING,
                )
            )
        where = ", ".join(admit.node_names)
        job_event(s, job.id, job.tenant_id, "admitted", f"placed on {where}: {admit.reason}")
        workload = self.workloads.get(job.id)
        if self.on_admit is not None and workload is not None and job.attempt == 0:
            self.on_admit(workload.tenant, job.flavor, now.timestamp() - workload.submitted_s)
        return 1

    def _record_reasons(self, s: Session, decisions: Decisions) -> None:
        """Why each waiting job waits, written only where it changed since the last pass."""
        changed = [
            {"jid": w.workload_id, "reason": w.reason}
            for w in decisions.wait
            if self.reasons.get(w.workload_id) != w.reason
        ]
        if not changed:
            return
        jobs = cast(Table, Job.__table__)
        s.connection().execute(
            update(jobs)
            .where(jobs.c.id == bindparam("jid"), jobs.c.state == JobState.PENDING.value)
            .values(reason=bindparam("reason")),
            changed,
        )
        self.reasons.update((c["jid"], c["reason"]) for c in changed)


def chips_in_use(s: Session) -> tuple[dict[str, set[int]], dict[str, int]]:
    """Which chips each node's placed jobs hold, and each node's size."""
    placements = s.scalars(select(Job.placement).where(Job.state.in_(PLACED_JOB_STATES)))
    sizes = {n.name: n.chips for n in s.scalars(select(Node))}
    return held_chips(p for p in placements if p), sizes
