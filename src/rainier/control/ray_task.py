"""The Ray actor that is one task: it starts the command on its node and remembers how it ended.

The actor is named after the task and detached, so a restarted control plane finds it by name
and still reads the exit code of a process that ended while nobody was watching. No method
blocks: the reconciler polls, and a stop is a signal to the process group.

The command's output goes to a file on the actor's node, which a thread of the actor sends to
the control plane as it grows (`logship`), with the job's token: nodes share no filesystem with
the control plane. The actor reports the task's end only once its output was sent (or the
sending gave up), so a job's log is whole when the job ends. A task started without a control
plane to send to (no `RAINIER_CONTROL_URL` and token) writes to the log path it was given. It
runs in the same sandbox as on the local executor, set up by this actor on its node; the actor,
outside the sandbox, keeps how the task ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rainier.control import netif, sandbox, taskrun
from rainier.control.executor import TaskLaunch
from rainier.control.log_archive import archive_log
from rainier.control.logship import FINISH_DEADLINE_S, LogShipper
from rainier.tasklink import ControlPlane


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
        env = {**self.spec.env, "RAINIER_RAY_NODE_ID": self.node_id}
        self.shipper: LogShipper | None = None
        self.exited_at: float | None = None
        plane = ControlPlane.from_env(env)
        log_path = (
            Path(self.spec.log_path) if plane is None else node_output_path(self.spec.task_id)
        )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path  # where the output is on this node, whoever else gets it
        if plane is not None:
            rank, attempt = int(env.get("RAINIER_RANK", "0")), int(env.get("RAINIER_ATTEMPT", "0"))
            os.chmod(log_path.parent, 0o700)
            log_path.write_bytes(b"")
            self.shipper = LogShipper(log_path, plane, rank, attempt).start()
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
                archive_log(self.log_path, self.spec.env)
        observed = Observed(
            pid=self.proc.pid if self.proc else None,
            exit_code=self.exit_code if self._output_sent() else None,
            killed=self.killed,
            node_id=self.node_id,
            acked_at=self.acked_at,
            ending=self.ending,
            isolation=str(self.isolation),
        )
        return asdict(observed)

    def _output_sent(self) -> bool:
        """Whether the ended task's output has reached the control plane (or stopped trying)."""
        if self.exit_code is None or self.shipper is None:
            return True
        if self.exited_at is None:
            self.exited_at = time.monotonic()
            self.shipper.stop()
        return self.shipper.done or time.monotonic() - self.exited_at > FINISH_DEADLINE_S

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


def node_output_path(task_id: str) -> Path:
    """Where a task's output is kept on its node while it is sent (`RAINIER_NODE_OUTPUT_DIR`,
    or a folder of the node's temporary directory)."""
    root = os.environ.get("RAINIER_NODE_OUTPUT_DIR") or os.path.join(
        tempfile.gettempdir(), "rainier-task-output"
    )
    return Path(root) / f"{task_id}.log"


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
