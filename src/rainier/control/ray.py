"""Runs tasks on a Ray cluster: the cluster's nodes are rainier's nodes, a task is a Ray actor.

The scheduler still decides where a gang goes; this executor only makes it so. The first task
of a gang attempt reserves every node's chips at once with a detached placement group whose
bundles are pinned to the chosen nodes by their `ray.io/node-id` label, so a gang never holds
half its nodes while waiting for the rest. Each task is a detached actor named after the task
(see `ray_task`), which is what lets a restarted control plane find it. A task id is claimed in
the GCS key-value store before its actor is created: a retry after a crash at any point finds
the claim and never starts the command a second time.

A gang's placement group is removed once every task of it ended and the reconciler recorded
that (it called `status` and got a final answer, then ticked again); removing it also ends
the actors. After a restart the same check runs over all of rainier's placement groups.

Without `RAINIER_RAY_ADDRESS` the executor starts a Ray of its own on this machine, with one
node that offers `os.cpu_count()` `cpu` chips; it ends with the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError
from ray.experimental import internal_kv
from ray.util.placement_group import (
    PlacementGroup,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rainier.catalog import FLAVORS
from rainier.config import Settings
from rainier.control.executor import ExecutorNodes, TaskLaunch, TaskStatus
from rainier.control.ray_nodes import NODE_ID_LABEL, Snapshot, chips_resource, read_nodes
from rainier.control.ray_task import TaskProcess
from rainier.control.sandbox import Isolation, probe

log = logging.getLogger("rainier.ray")

NAMESPACE = "rainier"
GANG_PREFIX = "rainier-gang-"
ACTOR_PREFIX = "rainier-task-"
GPU_DEVICE_ENVS = frozenset({"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"})  # Ray's `GPU`
ZERO_CHIP_SHARE = 0.001  # a bundle needs some resource; a zero-chip task takes a sliver
POLL_WAIT_S = 0.2
START_TIMEOUT_S = 300.0
SWEEP_EVERY_S = 10.0
SWEEP_ACKED_AGE_S = 5.0
# Unix sockets live under Ray's temp dir and must fit in 107 bytes, Ray's own subfolders included.
MAX_TEMP_DIR_CHARS = 40
CONNECT_WAIT_S = 30.0
RECONNECT_AFTER_S = 10.0


@dataclass
class _Gang:
    size: int
    done: set[str] = field(default_factory=set)


class RayExecutor:
    """The executor for `RAINIER_EXECUTOR=ray`."""

    name = "ray"

    def __init__(self, settings: Settings, *, namespace: str = NAMESPACE):
        self.settings = settings
        self.namespace = namespace
        self._owns_ray = False
        self._temp_dir: Path | None = None
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._failure: tuple[float, BaseException] | None = None
        self._queued: list[tuple[str, dict[str, Any], int]] = []  # signals sent before Ray was up
        self._connector = self._start_connecting()
        self._actor_class = ray.remote(TaskProcess)
        self._snapshot = Snapshot()
        self._addresses: dict[str, str] = {}  # every node seen, live or not
        self._actors: dict[str, Any] = {}
        self._polls: dict[str, Any] = {}
        self._gangs: dict[str, _Gang] = {}
        self._seen: set[str] = set()  # tasks whose actor answered at least once
        self._isolation: dict[str, Isolation] = {}  # node -> what its last task was given
        self._next_sweep = 0.0

    # -- connection -------------------------------------------------------------------------

    def _start_connecting(self) -> threading.Thread:
        """Connecting (or starting a local Ray) takes seconds; the API should not wait for it."""
        self._failure = None
        thread = threading.Thread(
            target=self._connect_once, name="rainier-ray-connect", daemon=True
        )
        thread.start()
        return thread

    def _connect_once(self) -> None:
        """Stays alive until `close`: a local Ray's processes die with the thread that forked
        them (they are started with a parent-death signal)."""
        try:
            self._connect()
        except Exception as exc:
            log.exception("cannot connect to Ray; retrying in %.0f s", RECONNECT_AFTER_S)
            self._failure = (time.monotonic(), exc)
            return
        self._ready.set()
        self._closing.wait()

    def _connected(self, wait_s: float = 0.0) -> bool:
        if self._ready.wait(wait_s):
            return True
        if self._failure is not None and time.monotonic() - self._failure[0] > RECONNECT_AFTER_S:
            self._connector = self._start_connecting()
        return False

    def _require(self) -> None:
        if not self._connected(CONNECT_WAIT_S):
            reason = f": {self._failure[1]}" if self._failure else ""
            raise RuntimeError(f"the Ray cluster is not reachable yet{reason}")

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        address = self.settings.ray_address
        if address:
            ray.init(
                address=address,
                namespace=self.namespace,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        else:
            chips = os.cpu_count() or 1
            ray.init(
                namespace=self.namespace,
                num_cpus=chips,
                resources={chips_resource("cpu"): chips},
                labels={f"rainier.io/{k}": "local" for k in ("zone", "block", "rack")},
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                _temp_dir=str(self._embedded_temp_dir()),
            )
        self._owns_ray = True

    def _embedded_temp_dir(self) -> Path:
        home = self.settings.home / "ray"
        if len(str(home)) <= MAX_TEMP_DIR_CHARS:
            home.mkdir(parents=True, exist_ok=True)
            return home
        self._temp_dir = Path(tempfile.mkdtemp(prefix="rainier-ray-"))
        return self._temp_dir

    def close(self) -> None:
        """The reconciler has stopped ticking: what it saw end is recorded and may be released."""
        self._ready.wait(CONNECT_WAIT_S)
        if self._ready.is_set():
            with contextlib.suppress(RayError):
                self._release_finished_gangs()
        self._actors.clear()
        self._polls.clear()
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
        self._closing.set()
        self._connector.join(timeout=CONNECT_WAIT_S)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    # -- inventory --------------------------------------------------------------------------

    def inventory(self) -> ExecutorNodes | None:
        if not self._connected():
            return None
        queued, self._queued = self._queued, []
        for task_id, handle, signum in queued:
            self._signal(task_id, handle, signum)
        self._refresh()
        self._release_finished_gangs()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_EVERY_S
            self._sweep()
        return self._snapshot.inventory()

    def isolation(self, node: str) -> Isolation:
        """What the node's tasks get, as the last task seen there reported it; a Ray this
        server started itself runs on this machine, which answers at once."""
        if node in self._isolation:
            return self._isolation[node]
        if not self.settings.ray_address:
            return probe().isolation if self.settings.isolation != "off" else Isolation.NONE
        return Isolation.UNKNOWN

    def node_address(self, node: str) -> str:
        """The node's address, also for a node that has just left (its replicas are probed
        until the reconciler notices), so a probe fails on the network, not here."""
        if node not in self._addresses and self._connected(CONNECT_WAIT_S):
            self._refresh()
        found = self._addresses.get(node)
        if found is None:
            raise LookupError(f"node {node} is not a node of the Ray cluster")
        return found

    def _refresh(self) -> None:
        self._snapshot = read_nodes(ray.nodes())
        self._addresses.update(self._snapshot.inventory().addresses)

    # -- starting ---------------------------------------------------------------------------

    def start(self, launch: TaskLaunch) -> dict[str, Any]:
        self._require()
        gang = f"{launch.job_id}.a{launch.attempt}"
        actor_name = f"{ACTOR_PREFIX}{launch.task_id}"
        node = self._node(launch.node)
        handle = {
            "actor": actor_name,
            "namespace": self.namespace,
            "node": launch.node,
            "node_id": node.node_id,
            "gang": gang,
            "gang_size": max(1, len(launch.gang_nodes)),
            "started_at": time.time(),
        }
        if self._kv_claim(f"task/{launch.task_id}", gang) and self._created(launch.task_id, gang):
            log.info("task %s was started before; adopting it", launch.task_id)
            return handle
        group = self._gang_group(gang, launch)
        self._kv_put(f"gang/{gang}/{launch.rank}", launch.task_id)
        bundle = self._bundle(launch, node.gpus)
        env = {**launch.env, "RAINIER_NODE_ADDRESS": node.address}
        actor = self._actor_class.options(  # type: ignore[attr-defined]
            name=actor_name,
            namespace=self.namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=0,
            num_cpus=0,
            num_gpus=bundle.get("GPU", 0),
            resources={k: v for k, v in bundle.items() if k != "GPU"},
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=launch.rank
            ),
        ).remote(
            {
                "task_id": launch.task_id,
                "command": list(launch.command),
                "env": env,
                "log_path": str(launch.log_path),
                "node": launch.node,
                "confine": confine_fields(launch),
                "isolation": self.settings.isolation,
            }
        )
        self._actors[launch.task_id] = actor
        self._kv_put(f"created/{launch.task_id}", gang)
        return handle

    def _created(self, task_id: str, gang: str) -> bool:
        """Whether a claimed task's actor was ever created. The claim comes first, so a
        control plane killed between the two leaves a claim with no actor: that task never
        ran, and is created now. The mark is written after the actor is, so an actor created
        just before such a kill is found by its name (`get_if_exists` then returns it)."""
        if self._kv_get(f"created/{task_id}") is not None:
            return True
        try:
            ray.get_actor(f"{ACTOR_PREFIX}{task_id}", namespace=self.namespace)
        except ValueError:
            log.info("task %s was claimed but its actor never created; creating it", task_id)
            return False
        self._kv_put(f"created/{task_id}", gang)
        return True

    def _node(self, name: str) -> Any:
        node = self._snapshot.nodes.get(name)
        if node is None:
            self._refresh()
            node = self._snapshot.nodes.get(name)
        if node is None:
            raise LookupError(f"node {name} is not a live node of the Ray cluster")
        return node

    def _bundle(self, launch: TaskLaunch, node_gpus: float) -> dict[str, float]:
        bundle = {chips_resource(launch.flavor): float(launch.chips) or ZERO_CHIP_SHARE}
        flavor = FLAVORS.get(launch.flavor)
        gpus = flavor is not None and flavor.device_env in GPU_DEVICE_ENVS
        if gpus and launch.chips and node_gpus >= launch.chips:
            bundle["GPU"] = float(launch.chips)
        return bundle

    def _gang_group(self, gang: str, launch: TaskLaunch) -> PlacementGroup:
        name = f"{GANG_PREFIX}{gang}"
        with contextlib.suppress(ValueError):
            return get_placement_group(name)
        nodes = launch.gang_nodes or (launch.node,)
        bundles, selectors = [], []
        for node_name in nodes:
            node = self._node(node_name)
            bundles.append(self._bundle(launch, node.gpus))
            selectors.append({NODE_ID_LABEL: node.node_id})
        return placement_group(
            bundles, name=name, lifetime="detached", bundle_label_selector=selectors
        )

    # -- observing --------------------------------------------------------------------------

    def status(self, task_id: str, handle: Mapping[str, Any]) -> TaskStatus:
        if not self._connected():
            return TaskStatus("running", detail="waiting for the Ray cluster to be reachable")
        node_id = str(handle.get("node_id", ""))
        if node_id in self._snapshot.dead_ids:
            return self._ended(task_id, handle, TaskStatus("lost", detail=self._gone(handle)))
        actor = self._actor(task_id, handle)
        if actor is None:
            detail = "its Ray actor is gone"
            return self._ended(task_id, handle, TaskStatus("lost", detail=detail))
        ref = self._polls.get(task_id)
        if ref is None:
            ref = self._polls[task_id] = actor.poll.remote()
        ready, _ = ray.wait([ref], timeout=POLL_WAIT_S)
        if not ready:
            waited = time.time() - float(handle.get("started_at", time.time()))
            if waited > START_TIMEOUT_S and task_id not in self._seen:
                with contextlib.suppress(RayError):
                    ray.kill(actor, no_restart=True)
                detail = f"not placed on {handle.get('node')} within {START_TIMEOUT_S:.0f} s"
                return self._ended(task_id, handle, TaskStatus("lost", detail=detail))
            return TaskStatus("running", detail="starting" if task_id not in self._seen else "")
        self._polls.pop(task_id, None)
        try:
            observed = ray.get(ref, timeout=POLL_WAIT_S)
        except (ActorUnavailableError, GetTimeoutError):
            return TaskStatus("running", detail="its actor does not answer for now")
        except RayActorError as exc:
            self._refresh()
            node_died = node_id in self._snapshot.dead_ids or "node has died" in str(exc)
            detail = self._gone(handle) if node_died else _first_line(str(exc))
            return self._ended(task_id, handle, TaskStatus("lost", detail=detail))
        except RayError as exc:
            return self._ended(task_id, handle, TaskStatus("lost", detail=_first_line(str(exc))))
        self._seen.add(task_id)
        with contextlib.suppress(ValueError):
            self._isolation[str(handle.get("node"))] = Isolation(observed.get("isolation"))
        if observed["exit_code"] is None:
            return TaskStatus("running")
        actor.ack.remote()
        if observed["killed"]:
            detail = "killed after its grace period"
            return self._ended(task_id, handle, TaskStatus("lost", detail=detail))
        ending = str(observed.get("ending") or "")
        exited = TaskStatus("exited", int(observed["exit_code"]), detail=ending)
        return self._ended(task_id, handle, exited)

    def _gone(self, handle: Mapping[str, Any]) -> str:
        return f"node {handle.get('node')} left the Ray cluster"

    def _actor(self, task_id: str, handle: Mapping[str, Any]) -> Any:
        actor = self._actors.get(task_id)
        if actor is None:
            try:
                actor = ray.get_actor(str(handle["actor"]), namespace=self.namespace)
            except ValueError:
                return None
            self._actors[task_id] = actor
        return actor

    def _ended(self, task_id: str, handle: Mapping[str, Any], status: TaskStatus) -> TaskStatus:
        gang = str(handle.get("gang", ""))
        if gang:
            entry = self._gangs.setdefault(gang, _Gang(int(handle.get("gang_size", 1))))
            entry.done.add(task_id)
        self._polls.pop(task_id, None)
        return status

    # -- stopping ---------------------------------------------------------------------------

    def signal_stop(self, task_id: str, handle: Mapping[str, Any]) -> None:
        self._signal(task_id, handle, signal.SIGTERM)

    def kill(self, task_id: str, handle: Mapping[str, Any]) -> None:
        self._signal(task_id, handle, signal.SIGKILL)
        if task_id not in self._seen and self._connected():
            actor = self._actor(task_id, handle)
            if actor is not None:
                with contextlib.suppress(RayError):
                    ray.kill(actor, no_restart=True)

    def _signal(self, task_id: str, handle: Mapping[str, Any], signum: int) -> None:
        if not self._connected():
            self._queued.append((task_id, dict(handle), int(signum)))
            return
        actor = self._actor(task_id, handle)
        if actor is not None:
            actor.signal.remote(int(signum))

    # -- releasing --------------------------------------------------------------------------

    def _release_finished_gangs(self) -> None:
        """Runs a tick after the reconciler saw the last task end: it has recorded that by now."""
        for gang, entry in list(self._gangs.items()):
            if len(entry.done) >= entry.size:
                self._remove_gang(gang, entry.size)
                del self._gangs[gang]
                for task_id in entry.done:
                    self._actors.pop(task_id, None)

    def _remove_gang(self, gang: str, size: int) -> None:
        with contextlib.suppress(ValueError, RayError):
            remove_placement_group(get_placement_group(f"{GANG_PREFIX}{gang}"))
        for rank in range(size):
            self._kv_del(f"gang/{gang}/{rank}")

    def _sweep(self) -> None:
        """Releases gangs that ended while no executor was watching them end, and gangs with
        a task that never started (the reconciler asks nothing more of it)."""
        try:
            table = placement_group_table()
        except RayError:
            return
        for entry in table.values():
            name = str(entry.get("name", ""))
            if not name.startswith(GANG_PREFIX) or entry.get("state") == "REMOVED":
                continue
            gang = name.removeprefix(GANG_PREFIX)
            size = len(entry.get("bundles", {}))
            if all(self._rank_done(gang, rank) for rank in range(size)):
                log.info("releasing the placement group of gang %s", gang)
                self._remove_gang(gang, size)
                self._gangs.pop(gang, None)

    def _rank_done(self, gang: str, rank: int) -> bool:
        task_id = self._kv_get(f"gang/{gang}/{rank}")
        if task_id is None:
            return True
        try:
            actor = ray.get_actor(f"{ACTOR_PREFIX}{task_id}", namespace=self.namespace)
            observed = cast(dict[str, Any], ray.get(actor.poll.remote(), timeout=2.0))
        except ValueError:
            return True
        except (ActorUnavailableError, GetTimeoutError):
            return False
        except RayError:
            return True
        acked = observed.get("acked_at")
        return acked is not None and time.time() - float(acked) > SWEEP_ACKED_AGE_S

    # -- the GCS key-value store --------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        return f"rainier/{key}".encode()

    def _kv_claim(self, key: str, value: str) -> bool:
        """True when the key was claimed before (by us, or by a control plane that crashed)."""
        return bool(
            internal_kv._internal_kv_put(
                self._key(key), value.encode(), overwrite=False, namespace=self.namespace
            )
        )

    def _kv_put(self, key: str, value: str) -> None:
        internal_kv._internal_kv_put(
            self._key(key), value.encode(), overwrite=True, namespace=self.namespace
        )

    def _kv_get(self, key: str) -> str | None:
        value = internal_kv._internal_kv_get(self._key(key), namespace=self.namespace)
        return value.decode() if value is not None else None

    def _kv_del(self, key: str) -> None:
        internal_kv._internal_kv_del(self._key(key), namespace=self.namespace)


def confine_fields(launch: TaskLaunch) -> dict[str, Any]:
    """The part of a launch the node's actor needs to confine the task."""
    names = (
        *("chips", "flavor", "rank", "attempt", "chip_ids", "device_env", "uid", "workdir"),
        *("read_write", "read_only", "hidden", "memory_bytes", "input_roots"),
    )
    return {name: getattr(launch, name) for name in names}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "its Ray actor failed"
