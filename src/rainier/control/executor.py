"""What the reconciler asks of an executor, whatever runs the processes (local, Ray)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from rainier.scheduler import NodeInfo

Observed = Literal["running", "exited", "lost"]


class UnstartableTask(Exception):
    """A task that no node could ever start as it is (its command line or environment is
    more than `exec` takes): retrying would fail the same way, so its job fails."""


@dataclass(frozen=True)
class TaskLaunch:
    """Everything needed to start one task; `task_id` is unique per job attempt and rank."""

    task_id: str
    job_id: str
    node: str
    command: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    chips: int = 0
    flavor: str = "cpu"
    rank: int = 0
    attempt: int = 0
    # every task's node, by rank: lets Ray reserve the gang at once
    gang_nodes: tuple[str, ...] = ()
    # which of the node's chips the task holds (indices), handed over the flavor's way
    chip_ids: tuple[int, ...] = ()
    device_env: str | None = None
    # the sandbox: the tenant's uid, the folders it may write and read, its memory
    uid: int | None = None
    workdir: str | None = None
    read_write: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    # inputs under these folders are checked from them down: the control plane vouches for
    # the folders above (the checkpoint root, the tenant's storage prefix)
    input_roots: tuple[str, ...] = ()
    memory_bytes: int | None = None


@dataclass(frozen=True)
class TaskStatus:
    """`alive_at`: an instant the task certainly still held its chips (billing runs up to it);
    `exited_at`: when it let go of them. Executors that cannot tell leave both None, and the
    reconciler takes the instant it observed instead."""

    state: Observed
    exit_code: int | None = None
    detail: str = ""
    alive_at: datetime | None = None
    exited_at: datetime | None = None


@dataclass
class ExecutorNodes:
    """The nodes an executor can see itself (Ray's inventory); local executors see none."""

    nodes: list[NodeInfo] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)


class Executor(Protocol):
    name: str

    def start(self, launch: TaskLaunch) -> dict[str, Any]:
        """Starts the task, or finds it already started (a retry after a crash): never twice.

        Returns the handle to store; it must let a restarted control plane find the task.
        """
        ...

    def status(self, task_id: str, handle: Mapping[str, Any]) -> TaskStatus: ...

    def signal_stop(self, task_id: str, handle: Mapping[str, Any]) -> None:
        """Asks the task to checkpoint and exit (SIGTERM)."""
        ...

    def kill(self, task_id: str, handle: Mapping[str, Any]) -> None: ...

    def node_address(self, node: str) -> str: ...

    def inventory(self) -> ExecutorNodes | None:
        """Nodes this executor discovers itself, or None when nodes are registered by hand."""
        ...

    def close(self) -> None: ...
