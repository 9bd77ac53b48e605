"""Runs tasks as processes of this machine; every node is "virtual" and lives here.

Each task starts through `taskwrap`, which keeps its records outside the task's reach and,
where this machine can give one, starts it in its sandbox (see `sandbox`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rainier.control import sandbox, taskrun
from rainier.control.executor import ExecutorNodes, TaskLaunch, TaskStatus, UnstartableTask

SPAWN_GRACE_S = 5.0
OUTPUT_FILE = "output.log"  # in the task's folder, when its output is sent (see `logship`)
log = logging.getLogger("rainier.local")


@contextlib.contextmanager
def _unstartable_if_too_big(task_dir: Path) -> Iterator[None]:
    """`exec` refusing the command line or environment as too long is final for the task."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.E2BIG, errno.ENAMETOOLONG):
            raise
        (task_dir / "spawned").unlink(missing_ok=True)
        raise UnstartableTask(f"exec refused the task: {exc.strerror}") from None


class LocalExecutor:
    name = "local"

    def __init__(
        self,
        tasks_dir: Path,
        isolation: sandbox.IsolationMode = sandbox.IsolationMode.AUTO,
        *,
        send_output: bool = False,
    ):
        """`send_output`: tasks' output goes to the control plane over HTTP (see `logship`),
        as from a node of another machine, instead of straight into the control plane's log
        files (`RAINIER_SEND_TASK_OUTPUT=1`)."""
        self.tasks_dir = tasks_dir
        self.isolation_mode = isolation
        self.send_output = send_output
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        found = sandbox.probe()
        if isolation == sandbox.IsolationMode.OFF:
            log.warning("tasks are not isolated: RAINIER_ISOLATION=off")
        elif not found.ok:
            log.warning(
                "tasks are not isolated: %s%s",
                found.reason,
                "; RAINIER_ISOLATION=required, so none will start"
                if isolation == sandbox.IsolationMode.REQUIRED
                else "",
            )

    def isolation(self, node: str) -> sandbox.Isolation:
        """What this machine gives every task (all local nodes are this machine)."""
        if self.isolation_mode == sandbox.IsolationMode.OFF:
            return sandbox.Isolation.NONE
        return sandbox.probe().isolation

    def _dir(self, task_id: str) -> Path:
        return self.tasks_dir / task_id

    def start(self, launch: TaskLaunch) -> dict[str, Any]:
        task_dir = self._dir(launch.task_id)
        if (task_dir / "spawned").exists() and _claimed(task_dir):
            return self._handle(task_dir)
        task_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(task_dir, 0o700)
        try:
            found = sandbox.decide(self.isolation_mode)
        except sandbox.SandboxUnavailable as exc:
            raise UnstartableTask(str(exc)) from None
        run = taskrun.run_of(launch, found.bwrap if found else None)
        with _unstartable_if_too_big(task_dir):
            taskrun.check_exec_size(run)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        taskrun.make_folders(run, launch)
        write_replacing(task_dir / "launch.json", json.dumps(run.to_json()))
        spawned_us = time.time_ns() // 1000
        (task_dir / "spawned").write_text(f"{spawned_us // 1_000_000}.{spawned_us % 1_000_000:06d}")
        output = task_dir / OUTPUT_FILE if self.send_output else launch.log_path
        wrap = [sys.executable, "-m", "rainier.control.taskwrap", str(task_dir), "--launch"]
        with open(output, "ab") as out:
            proc = subprocess.Popen(
                [*wrap, *(["--send-output"] if self.send_output else [])],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._children[launch.task_id] = proc
        return {"pid": proc.pid, "pgid": proc.pid, "dir": str(task_dir), "started_us": spawned_us}

    def _handle(self, task_dir: Path) -> dict[str, Any]:
        pid = _read_int(task_dir / "pid")
        handle: dict[str, Any] = {"pid": pid, "pgid": pid, "dir": str(task_dir)}
        spawned_us = spawned_micros(task_dir)
        if spawned_us is not None:
            handle["started_us"] = spawned_us
        return handle

    def status(self, task_id: str, handle: Mapping[str, Any]) -> TaskStatus:
        """A task holds its chips from `spawned` to `exited_at`; see `rainier.control.taskwrap`."""
        seen_at = datetime.now(UTC)
        proc = self._children.get(task_id)
        if proc is not None and proc.poll() is not None:
            self._children.pop(task_id, None)
        task_dir = self._dir(task_id)
        code = _read_int(task_dir / "exit")
        if code is not None:
            exited_at = _instant(_read_int(task_dir / "exited_at"))
            return TaskStatus(
                "exited", code, detail=_read_text(task_dir / "ending"), exited_at=exited_at
            )
        if _locked(task_dir / "lock"):
            if (task_dir / "exiting").exists():
                return TaskStatus("running", alive_at=_instant(spawned_micros(task_dir)))
            return TaskStatus("running", alive_at=seen_at)
        spawned = _read_float(task_dir / "spawned")
        starting = spawned is not None and time.time() - spawned < SPAWN_GRACE_S
        if starting and not (task_dir / "pid").exists():
            return TaskStatus("running", detail="starting", alive_at=seen_at)
        code = _read_int(task_dir / "exit")
        if code is not None:
            return TaskStatus("exited", code)
        return TaskStatus("lost", detail="the task's process is gone and left no exit code")

    def _pgid(self, task_id: str, handle: Mapping[str, Any]) -> int | None:
        pid = _read_int(self._dir(task_id) / "pid") or handle.get("pgid")
        if pid is None or not _locked(self._dir(task_id) / "lock"):
            return None
        return int(pid)

    def signal_stop(self, task_id: str, handle: Mapping[str, Any]) -> None:
        self._signal(task_id, handle, signal.SIGTERM)

    def kill(self, task_id: str, handle: Mapping[str, Any]) -> None:
        self._signal(task_id, handle, signal.SIGKILL)

    def _signal(self, task_id: str, handle: Mapping[str, Any], sig: signal.Signals) -> None:
        pgid = self._pgid(task_id, handle)
        if pgid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    def node_address(self, node: str) -> str:
        return "127.0.0.1"

    def inventory(self) -> ExecutorNodes | None:
        return None

    def close(self) -> None:
        for proc in self._children.values():
            proc.poll()
        self._children.clear()


def _claimed(task_dir: Path) -> bool:
    """A wrapper took the task (see `taskwrap`). `spawned` without a claim is a spawn that a
    crash may have cut short before its fork: the task is spawned again, and of two wrappers
    only one ever runs it."""
    return (task_dir / "pid").exists() or _locked(task_dir / "lock")


def write_replacing(path: Path, text: str) -> None:
    """`path` holds all of `text` or what it held before, even across a crash: a reader (the
    control plane after a restart, a wrapper of an earlier spawn) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    with open(tmp) as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _locked(path: Path) -> bool:
    """True while the task's wrapper holds its lock, i.e. the task is alive."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def spawned_micros(task_dir: Path) -> int | None:
    """The instant the task was spawned, exactly, in epoch microseconds."""
    try:
        whole, _, frac = (task_dir / "spawned").read_text().strip().partition(".")
        return int(whole) * 1_000_000 + int((frac or "0").ljust(6, "0")[:6])
    except (FileNotFoundError, ValueError):
        return None


def instant_of_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _instant(micros: int | None) -> datetime | None:
    return None if micros is None else instant_of_micros(micros)


def _read_float(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
