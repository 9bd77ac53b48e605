"""The Ray actor that is one task: it starts the command on its node and remembers how it ended.

The actor is named after the task and detached, so a restarted control plane finds it by name
and still reads the exit code of a process that ended while nobody was watching. No method
blocks: the reconciler polls, and a stop is a signal to the process group.

The command writes to the log path the control plane chose, which must therefore be on a
filesystem every node shares (or be collected from the nodes by other means).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1

# Variables of the Ray worker that must not reach a tenant's process: they would let it talk
# to the Ray cluster (with its token) instead of through the control plane.
_PRIVATE_PREFIXES = ("RAY_",)


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    command: tuple[str, ...]
    env: dict[str, str]
    log_path: str
    node: str


@dataclass
class Observed:
    pid: int | None
    exit_code: int | None
    killed: bool
    node_id: str
    acked_at: float | None


class TaskProcess:
    def __init__(self, spec: Mapping[str, Any]):
        self.spec = TaskSpec(**{**spec, "command": tuple(spec["command"])})
        self.node_id = _node_id()
        self.killed = False
        self.acked_at: float | None = None
        self.exit_code: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        log_path = Path(self.spec.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
        env.update(self.spec.env)
        env["RAINIER_RAY_NODE_ID"] = self.node_id
        with open(log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    list(self.spec.command),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=env.get("RAINIER_WORKDIR") or None,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                log.write(f"rainier: cannot start {self.spec.command[0]!r}: {exc}\n".encode())
                self.exit_code = 127

    def poll(self) -> dict[str, Any]:
        if self.proc is not None and self.exit_code is None:
            self.exit_code = self.proc.poll()
        observed = Observed(
            pid=self.proc.pid if self.proc else None,
            exit_code=self.exit_code,
            killed=self.killed,
            node_id=self.node_id,
            acked_at=self.acked_at,
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


def _die_with_parent() -> None:
    """Takes the command down with its actor when Ray kills the actor or loses the node."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
