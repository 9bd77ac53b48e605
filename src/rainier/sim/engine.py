"""The discrete-event engine: a trace, a cluster and a `Scheduler` on a simulated clock.

It drives the scheduler exactly as the live reconciler does: it builds a `ClusterState`
(nodes, quotas, running allocations with `stopping` set for those asked to stop, pending
workloads), applies `Admit` (start now) and `Preempt` (stop after the grace period, then the job
returns to the queue and resumes from its last checkpoint), and asks again after each batch of
simultaneous events.

Speed comes from three choices, each invisible to a correct policy:

* The scheduler is called only after a batch in which something changed and only while work
  is pending: with nothing pending there is nothing to admit and no reason to preempt.
* Pending work is kept in one sorted queue per (tenant, flavor) and the scheduler sees the first
  `queue_window` of each queue (like Slurm's `bf_max_job_test`). Every tenant's head stays
  visible, so guarantees can be served, and the global first-come order of any flavor is a prefix
  of what is passed. When the scheduler started every job it was shown of a cut queue, it is
  called again at the same instant with the next ones, so a strict-order policy never idles
  while work is hidden.
  `queue_window=None` passes everything (the SJF oracle needs it).
* With `skip_when_full`, for policies that never preempt and read the clock only through
  events (the baselines), a batch that only added jobs to flavors with no free chip skips the
  call: such a policy could not start them, and nothing else changed since its last answer.
* Checkpoints are not queued as events: a job's progress at any instant is computed from when its
  current run started, which is exact and costs nothing per tick.

A policy that returns an impossible decision (unknown node, chips that are not free, a gang on
too few distinct nodes) is a bug in that policy, so it raises `PolicyError` instead of being
silently repaired.
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Sequence
from dataclasses import replace
from operator import itemgetter

from rainier.scheduler.types import (
    Allocation,
    ClusterState,
    Decisions,
    NodeInfo,
    Quota,
    Scheduler,
    Workload,
)
from rainier.sim.model import Cluster, Trace, TraceJob
from rainier.sim.records import (
    DONE,
    PENDING,
    RUNNING,
    STOPPING,
    UNPLACEABLE,
    GuaranteeEpisode,
    PolicyError,
    QueueKey,
    SimConfig,
    SimJobState,
    SimResult,
    Timeline,
)

_FINISH, _STOP = 0, 1
_MAX_SAME_INSTANT = 10_000

Entry = tuple[int, float, int, Workload]


_workload_of = itemgetter(3)


class Simulation:
    def __init__(
        self,
        cluster: Cluster,
        trace: Trace,
        scheduler: Scheduler,
        policy_name: str = "policy",
        config: SimConfig | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.scheduler = scheduler
        self.policy_name = policy_name
        self.config = config or SimConfig()
        self.progress = progress
        self.nodes: tuple[NodeInfo, ...] = tuple(cluster.node_infos())
        self.quotas: tuple[Quota, ...] = tuple(cluster.quotas())
        self.node_index = {n.name: i for i, n in enumerate(self.nodes)}
        self.node_flavor = [n.flavor for n in self.nodes]
        self.free = [n.chips for n in self.nodes]
        self.capacity = {p.flavor: p.chips for p in cluster.pools}
        self.pools = {p.flavor: p for p in cluster.pools}
        self.jobs = [self._job_state(i, j) for i, j in enumerate(trace.sorted().jobs)]
        self.by_id = {js.workload.id: js for js in self.jobs}
        if len(self.by_id) != len(self.jobs):
            raise ValueError("trace job ids must be unique")
        self.queues: dict[QueueKey, list[Entry]] = {}
        self.queue_sizes: dict[QueueKey, dict[int, int]] = {}
        self.window_cache: dict[QueueKey, tuple[Workload, ...]] = {}
        self.pending_count = 0
        self.pending_view: tuple[Workload, ...] | None = ()
        self.cut_heads: list[tuple[Workload, ...]] = []
        self.running: dict[str, Allocation] = {}
        self.running_view: tuple[Allocation, ...] | None = ()
        self.busy = dict.fromkeys(self.capacity, 0)
        self.held: dict[QueueKey, int] = {}
        self.utilization = {f: Timeline() for f in self.capacity}
        self.queue_length = Timeline()
        self.tenant_chip_s: dict[QueueKey, float] = {}
        self.guaranteed = [
            ((t.tenant, f), g) for t in cluster.tenants for f, g in t.guaranteed_chips.items() if g
        ]
        self.underserved_since: dict[QueueKey, float] = {}
        self.seen: dict[QueueKey, int] = {}
        self.rates: dict[QueueKey, tuple[float, float]] = {}
        self.waiting_chips: dict[QueueKey, int] = {}
        self.entitlement: dict[QueueKey, tuple[float, float]] = {}
        self.watched_s = 0.0
        self.episodes: list[GuaranteeEpisode] = []
        self.allowance_s = max((j.grace_period_s for j in trace.jobs), default=0.0)
        self.allowance_s += self.config.tick_s
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.events = 0
        self.calls = 0

    def _job_state(self, index: int, job: TraceJob) -> SimJobState:
        w = Workload(
            id=job.id,
            tenant=job.tenant,
            flavor=job.flavor,
            nodes=job.nodes,
            chips_per_node=job.chips_per_node,
            priority=job.priority,
            kind=job.kind,
            max_duration_s=job.max_duration_s,
            submitted_s=job.submit_s,
            preemptible=job.preemptible,
            grace_period_s=job.grace_period_s,
        )
        return SimJobState(
            job=job,
            workload=w,
            index=index,
            key=(-job.priority, job.submit_s, index),
            queue=(job.tenant, job.flavor),
            chips=job.nodes * job.chips_per_node,
        )

    def run(self) -> SimResult:
        started = time.perf_counter()
        jobs, heap, tick = self.jobs, self.heap, self.config.tick_s
        n, nxt, now, same_instant, batches = len(jobs), 0, 0.0, 0, 0
        for f in self.capacity:
            self.utilization[f].record(0.0, 0)
        self.queue_length.record(0.0, 0)
        queue_t, queue_v = self.queue_length.time_s, self.queue_length.value
        busy, capacity = self.busy, self.capacity
        skip_when_full, events = self.config.skip_when_full, 0
        heappop, arrive, release = heapq.heappop, self._arrive, self._release
        while True:
            t = jobs[nxt].job.submit_s if nxt < n else math.inf
            if heap and heap[0][0] < t:
                t = heap[0][0]
            if t == math.inf:
                break
            if tick > 0:
                t = math.ceil(t / tick - 1e-9) * tick
            same_instant = same_instant + 1 if t == now else 0
            now = t
            finished = False
            full_arrivals_only = skip_when_full
            while nxt < n and jobs[nxt].job.submit_s <= t:
                js = jobs[nxt]
                arrive(js)
                if full_arrivals_only:
                    flavor = js.job.flavor
                    full_arrivals_only = busy.get(flavor) == capacity.get(flavor)
                nxt += 1
                events += 1
            if heap and heap[0][0] <= t:
                full_arrivals_only = False
                while heap and heap[0][0] <= t:
                    at, kind, _, index, generation = heappop(heap)
                    js = jobs[index]
                    events += 1
                    if js.generation != generation:
                        continue
                    if kind == _FINISH and (js.state == RUNNING or js.state == STOPPING):
                        release(js, at)
                        js.state = DONE
                        js.end_s = at
                        finished = True
                    elif kind == _STOP and js.state == STOPPING:
                        self._stop(js, at)
            if finished:
                same_instant = 0
            elif same_instant > _MAX_SAME_INSTANT:
                raise PolicyError(
                    f"{self.policy_name}: preempts and restarts at t={now:g}s without end"
                )
            if self.pending_count and not full_arrivals_only:
                self._schedule(now)
            if queue_t[-1] == now:
                queue_v[-1] = self.pending_count
            else:
                queue_t.append(now)
                queue_v.append(self.pending_count)
            if self.guaranteed:
                self._watch_guarantees(now)
            batches += 1
            if self.progress is not None and batches & 0x3FF == 0:
                self.progress(nxt, n)
        self.events = events
        for key, since in self.underserved_since.items():
            self.episodes.append(GuaranteeEpisode(key[0], key[1], since, now))
        if self.progress is not None:
            self.progress(n, n)
        return SimResult(
            policy=self.policy_name,
            cluster=self.cluster,
            jobs=self.jobs,
            utilization=self.utilization,
            capacity_chips=self.capacity,
            queue_length=self.queue_length,
            tenant_chip_s=self.tenant_chip_s,
            guarantee_episodes=self.episodes,
            guarantee_allowance_s=self.allowance_s,
            entitlement=self.entitlement,
            events=self.events,
            scheduler_calls=self.calls,
            wall_s=time.perf_counter() - started,
            end_s=now,
        )

    def _arrive(self, js: SimJobState) -> None:
        pool = self.pools.get(js.job.flavor)
        if pool is None or js.job.chips_per_node > pool.chips_per_node or js.job.nodes > pool.nodes:
            js.state = UNPLACEABLE
            return
        js.pending_since_s = js.job.submit_s
        self._enqueue(js)

    def _enqueue(self, js: SimJobState) -> None:
        q = js.queue
        keys = self.queues.get(q)
        if keys is None:
            keys = self.queues[q] = []
            self.queue_sizes[q] = {}
        window = self.config.queue_window
        entry = (*js.key, js.workload)
        if not keys or keys[-1] < entry:
            keys.append(entry)
            if window is None or len(keys) <= window:
                self.window_cache.pop(q, None)
        else:
            insort(keys, entry)
            self.window_cache.pop(q, None)
        if self.guaranteed:
            sizes = self.queue_sizes[q]
            sizes[js.chips] = sizes.get(js.chips, 0) + 1
            self.waiting_chips[q] = self.waiting_chips.get(q, 0) + js.chips
        js.state = PENDING
        self.pending_count += 1
        self.pending_view = None

    def _dequeue(self, js: SimJobState) -> None:
        q = js.queue
        keys = self.queues[q]
        i = bisect_left(keys, js.key)
        del keys[i]
        window = self.config.queue_window
        if window is None or i < window:
            self.window_cache.pop(q, None)
        if self.guaranteed:
            self.waiting_chips[q] -= js.chips
            sizes = self.queue_sizes[q]
            chips = js.chips
            if sizes[chips] == 1:
                del sizes[chips]
            else:
                sizes[chips] -= 1
        self.pending_count -= 1
        self.pending_view = None

    def _pending(self) -> tuple[Workload, ...]:
        if self.pending_view is not None:
            return self.pending_view
        window, cache = self.config.queue_window, self.window_cache
        parts: list[Workload] = []
        cut_heads = []
        for q, keys in self.queues.items():
            if not keys:
                continue
            head = cache.get(q)
            if head is None:
                cut = keys if window is None else keys[:window]
                head = cache[q] = tuple(map(_workload_of, cut))
            if window is not None and len(keys) > window:
                cut_heads.append(head)
            parts.extend(head)
        self.cut_heads = cut_heads
        self.pending_view = tuple(parts)
        return self.pending_view

    def _schedule(self, now: float) -> None:
        while True:
            if self.running_view is None:
                self.running_view = tuple(self.running.values())
            state = ClusterState(
                now_s=now,
                nodes=self.nodes,
                quotas=self.quotas,
                running=self.running_view,
                pending=self._pending(),
            )
            self.calls += 1
            decisions = self.scheduler.schedule(state)
            cut_heads = self.cut_heads
            if not self._apply(decisions, now) or not cut_heads:
                return
            jobs = self.by_id
            if not any(all(jobs[w.id].state != PENDING for w in head) for head in cut_heads):
                return

    def _apply(self, d: Decisions, now: float) -> bool:
        for p in d.preempt:
            alloc = self.running.get(p.workload_id)
            if alloc is None:
                raise PolicyError(f"{self.policy_name}: preempts {p.workload_id!r}, not running")
            if alloc.stopping:
                continue
            js = self.by_id[p.workload_id]
            js.state = STOPPING
            self.running[p.workload_id] = replace(alloc, stopping=True)
            self.running_view = None
            self._held_add(js, -js.chips)
            self._push(now + max(0.0, p.grace_period_s), _STOP, js)
        for a in d.admit:
            self._start(a.workload_id, a.node_names, now)
        if self.config.record_reservations:
            for w in d.wait:
                if w.reservation_s is not None:
                    js = self.by_id[w.workload_id]
                    js.reservation_s = min(js.reservation_s, w.reservation_s)
        return bool(d.admit)

    def _start(self, workload_id: str, names: Sequence[str], now: float) -> None:
        js = self.by_id.get(workload_id)
        if js is None or js.state != PENDING:
            raise PolicyError(f"{self.policy_name}: admits {workload_id!r}, which is not pending")
        w = js.workload
        if len(names) != w.nodes or (w.nodes > 1 and len(set(names)) != w.nodes):
            raise PolicyError(
                f"{self.policy_name}: admits {workload_id!r} on {len(set(names))} distinct "
                f"nodes; it needs {w.nodes}"
            )
        ids = []
        free, cpn = self.free, w.chips_per_node
        for name in names:
            i = self.node_index.get(name)
            if i is None or self.node_flavor[i] != w.flavor or free[i] < cpn:
                raise PolicyError(
                    f"{self.policy_name}: admits {workload_id!r} on {name!r}, which lacks "
                    f"{cpn} free {w.flavor} chips"
                )
            ids.append(i)
        for i in ids:
            free[i] -= cpn
        self._dequeue(js)
        js.waited_s += now - js.pending_since_s
        js.state = RUNNING
        js.node_ids = tuple(ids)
        js.run_start_s = now
        if js.first_start_s != js.first_start_s:
            js.first_start_s = now
        js.generation += 1
        self.running[workload_id] = Allocation(
            w, names if isinstance(names, tuple) else tuple(names), now
        )
        self.running_view = None
        self._held_add(js, js.chips)
        self._busy_add(w.flavor, js.chips, now)
        run_for = max(0.0, js.job.duration_s - js.saved_s)
        limit = js.job.max_duration_s
        if limit is not None and run_for > limit:
            run_for = limit
            js.timed_out = True
        self._push(now + run_for, _FINISH, js)

    def _push(self, at: float, kind: int, js: SimJobState) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, kind, self.seq, js.index, js.generation))

    def _held_add(self, js: SimJobState, chips: int) -> None:
        if self.guaranteed:
            self.held[js.queue] = self.held.get(js.queue, 0) + chips

    def _busy_add(self, flavor: str, chips: int, at: float) -> None:
        busy = self.busy[flavor] = self.busy[flavor] + chips
        tl = self.utilization[flavor]
        if tl.time_s[-1] == at:
            tl.value[-1] = busy
        else:
            tl.time_s.append(at)
            tl.value.append(busy)

    def _release(self, js: SimJobState, at: float) -> None:
        w = js.workload
        for i in js.node_ids:
            self.free[i] += w.chips_per_node
        del self.running[w.id]
        self.running_view = None
        if js.state == RUNNING:
            self._held_add(js, -js.chips)
        self._busy_add(w.flavor, -js.chips, at)
        ran = at - js.run_start_s
        js.held_s += ran
        self.tenant_chip_s[js.queue] = self.tenant_chip_s.get(js.queue, 0.0) + ran * js.chips

    def _stop(self, js: SimJobState, at: float) -> None:
        self._release(js, at)
        ran = at - js.run_start_s
        interval = js.job.checkpoint_interval_s
        if self.config.sigterm_checkpoints:
            kept = ran
        elif interval:
            kept = math.floor(ran / interval + 1e-9) * interval
        else:
            kept = 0.0
        js.saved_s += kept
        js.lost_chip_s += (ran - kept) * js.chips
        js.preemptions += 1
        js.timed_out = False
        js.pending_since_s = at
        js.generation += 1
        self._enqueue(js)

    def _watch_guarantees(self, now: float) -> None:
        """Tracks two things per guaranteed (tenant, flavor), both piecewise constant between
        batches. Stretches of being short, which restart whenever the tenant is given chips (it is
        being served, just not all at once). And the integrals of what the tenant deserved,
        min(chips held + chips waiting, guarantee), and received, min(chips held, guarantee):
        what fairness is computed from."""
        sizes, held, since, seen = self.queue_sizes, self.held, self.underserved_since, self.seen
        rates, entitlement, waiting_chips = self.rates, self.entitlement, self.waiting_chips
        elapsed = now - self.watched_s
        self.watched_s = now
        for key, guaranteed in self.guaranteed:
            if elapsed > 0 and key in rates:
                deserved, received = rates[key]
                total_d, total_r = entitlement.get(key, (0.0, 0.0))
                entitlement[key] = (total_d + elapsed * deserved, total_r + elapsed * received)
            waiting = sizes.get(key)
            holding = held.get(key, 0)
            rates[key] = (
                min(holding + waiting_chips.get(key, 0), guaranteed),
                min(holding, guaranteed),
            )
            short = bool(waiting) and holding + min(waiting or (0,)) <= guaranteed
            gained = holding > seen.get(key, 0)
            seen[key] = holding
            if key in since and (gained or not short):
                self.episodes.append(GuaranteeEpisode(key[0], key[1], since.pop(key), now))
            if short and key not in since:
                since[key] = now
