"""The Ray actor that is one task: it starts the command on its node and remembers how it ended.

The actor is named after the task and detached, so a restarted control plane finds it by name
and still reads the exit code of a process that ended while nobody was watching. No method
blocks: the reconciler polls, and a stop is a signal to the process group.

The command writes to the log path the control plane chose, which must therefore be on a
filesystem every node shares (or be collected from the nodes by other means). It runs in the
same sandbox as on the local executor, set up by this actor on its node; the actor, outside
the sandbox, keeps how the task ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rainier.control import netif, sandbox, taskrun
from rainier.control.executor import TaskLaunch


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    command: tuple[str, ...]
    env: dict[str, str]
    log_path: str
    node: str
    # the sandbox's part of the launch (see `executor.TaskLaunch`) and RAINIER_ISOLATION
    confine: dict[str, Any] = field(default_factory=dict)
    isolation: str = "auto"


@dataclass
class Observed:
    pid: int | None
    exit_code: int | None
    killed: bool
    node_id: str
    acked_at: float | None
    ending: str | None = None
    isolation: str = "none"


class TaskProcess:
    def __init__(self, spec: Mapping[str, Any]):
        self.spec = TaskSpec(**{**spec, "command": tuple(spec["command"])})
        self.node_id = _node_id()
        self.killed = False
        self.acked_at: float | None = None
        self.exit_code: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.isolation = sandbox.Isolation.NONE
        self.started: taskrun.Started | None = None
        self.ending: str | None = None
        log_path = Path(self.spec.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.spec.env, "RAINIER_RAY_NODE_ID": self.node_id}
        gpus = _ray_gpu_ids()
        device_env = self.spec.confine.get("device_env")
        if gpus and device_env in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
            env[device_env] = ",".join(gpus)  # the GPUs Ray reserved for this actor
        interface = netif.interface_of(env.get("RAINIER_NODE_ADDRESS", ""))
        if interface and "GLOO_SOCKET_IFNAME" not in env:
            env["GLOO_SOCKET_IFNAME"] = interface  # gloo's peers reach it at the node's address
        launch = TaskLaunch(
            task_id=self.spec.task_id,
            job_id="",
            node=self.spec.node,
            command=self.spec.command,
            env=env,
            log_path=log_path,
            **_launch_fields(self.spec.confine),
        )
        with open(log_path, "ab") as log:
            try:
                found = sandbox.decide(sandbox.IsolationMode(self.spec.isolation))
                self.isolation = found.isolation if found else sandbox.Isolation.NONE
                run = taskrun.run_of(launch, found.bwrap if found else None)
                taskrun.make_folders(run, launch)
                self.started = taskrun.start(run, log, own_session=True, die_with_parent=True)
                self.proc = self.started.proc
            except sandbox.SandboxUnavailable as exc:
                log.write(f"rainier: {exc}\n".encode())
                self.exit_code, self.ending = 126, str(exc)
            except OSError as exc:
                log.write(f"rainier: cannot start the task: {exc}\n".encode())
                self.exit_code = 127

    def poll(self) -> dict[str, Any]:
        if self.proc is not None and self.exit_code is None:
            self.exit_code = self.proc.poll()
            if self.exit_code is not None and self.started is not None:
                self.exit_code = self.started.exit_code(self.exit_code)
                self.ending = self.started.ending()
                self.started.release()
        observed = Observed(
            pid=self.proc.pid if self.proc else None,
            exit_code=self.exit_code,
            killed=self.killed,
            node_id=self.node_id,
            acked_at=self.acked_at,
            ending=self.ending,
            isolation=str(self.isolation),
        )
        return asdict(observed)

    def signal(self, signum: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if signum == signal.SIGKILL:
            self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def ack(self) -> None:
        """The control plane has recorded how the task ended; the actor may now be released."""
        self.acked_at = self.acked_at or time.time()


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _ray_gpu_ids() -> list[str]:
    import ray

    with contextlib.suppress(Exception):
        return [str(g) for g in ray.get_gpu_ids()]
    return []


def _launch_fields(confine: Mapping[str, Any]) -> dict[str, Any]:
    tuples = ("chip_ids", "read_write", "read_only", "hidden", "input_roots")
    return {k: tuple(v) if k in tuples else v for k, v in confine.items()}
