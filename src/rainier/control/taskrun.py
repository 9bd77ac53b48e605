"""Starting one task's process on its node, confined or bare, and saying how it ended.

Both executors end here: the local executor's wrapper (`taskwrap`) and the Ray executor's actor
(`ray_task`) run on the task's node, outside the sandbox, and keep the task's records (lock,
exit code, when it let go of its chips) where the task cannot reach them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from rainier.control import rendezvous
from rainier.control.cgroups import Limits, TaskCgroup
from rainier.control.executor import TaskLaunch
from rainier.control.sandbox import Confinement, bwrap_argv, readable_by, task_environment

MIB = 1024 * 1024
MAX_ARG_STRLEN = 32 * 4096  # Linux: the longest single argument or variable exec takes
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class TaskRun:
    """One task as its node runs it; JSON-safe, written beside the task's records."""

    task_id: str
    command: tuple[str, ...]
    env: dict[str, str]
    workdir: str | None = None
    cpus: tuple[int, ...] = ()
    memory_bytes: int | None = None
    cpu_quota_cores: float | None = None
    confinement: Confinement | None = None
    bwrap: str | None = None
    log_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "command": list(self.command),
            "env": self.env,
            "workdir": self.workdir,
            "cpus": list(self.cpus),
            "memory_bytes": self.memory_bytes,
            "cpu_quota_cores": self.cpu_quota_cores,
            "confinement": self.confinement.to_json() if self.confinement else None,
            "bwrap": self.bwrap,
            "log_path": self.log_path,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskRun:
        conf = data.get("confinement")
        return cls(
            task_id=str(data["task_id"]),
            command=tuple(data["command"]),
            env=dict(data["env"]),
            workdir=data.get("workdir"),
            cpus=tuple(data.get("cpus") or ()),
            memory_bytes=data.get("memory_bytes"),
            cpu_quota_cores=data.get("cpu_quota_cores"),
            confinement=Confinement.from_json(conf) if conf else None,
            bwrap=data.get("bwrap"),
            log_path=data.get("log_path"),
        )


class Started:
    """A started task: its process and, when confined, its cgroup."""

    def __init__(self, proc: subprocess.Popen[bytes], cgroup: TaskCgroup | None, run: TaskRun):
        self.proc, self.cgroup, self.run = proc, cgroup, run

    def exit_code(self, raw: int) -> int:
        """The task's exit code as a bare process reports it: bubblewrap says "killed by
        signal N" as 128 + N, as a shell does; Popen says -N."""
        if self.cgroup is not None and 128 < raw < 128 + 65:
            return -(raw - 128)
        return raw

    def ending(self) -> str | None:
        """Why the task ended, when its exit code alone would not say it."""
        if self.cgroup is not None and self.cgroup.oom_killed():
            return f"out of memory (limit {_size(self.run.memory_bytes)})"
        return None

    def release(self) -> None:
        if self.cgroup is not None:
            for pid in self.cgroup.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.cgroup.remove()


def start(
    run: TaskRun,
    stdout: IO[bytes] | int | None,
    *,
    own_session: bool = False,
    die_with_parent: bool = False,
) -> Started:
    """Starts the task. Confined, its process enters the task's cgroup and drops to the
    tenant's uid inside bubblewrap; bare, it still gets only its own environment and cores.
    A gang's task first learns where its gang meets (`rendezvous.settle`), which may wait
    for rank 0's node."""
    env = task_environment(rendezvous.settle(run.env), run.workdir)
    cgroup: TaskCgroup | None = None
    argv: Sequence[str] = run.command
    cwd = run.workdir
    if run.confinement is not None and run.bwrap:
        cgroup = TaskCgroup(run.task_id, Limits(run.memory_bytes, run.cpu_quota_cores, run.cpus))
        cgroup.create()
        argv = bwrap_argv(run.bwrap, run.confinement, run.command)
        cwd = None
    proc = subprocess.Popen(
        list(argv),
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd or None,
        close_fds=True,
        start_new_session=own_session,
        preexec_fn=_prepare(run, cgroup, die_with_parent),
    )
    return Started(proc, cgroup, run)


def _prepare(run: TaskRun, cgroup: TaskCgroup | None, die_with_parent: bool) -> Callable[[], None]:
    """What the child does before it execs: enter its cgroup, take its cores and, under
    bubblewrap, leave SIGTERM to the workload (the sandbox must not die of it). With
    `die_with_parent` the task is killed when its starter dies (bubblewrap does that itself)."""
    cpus = set(run.cpus)

    def prepare() -> None:
        if die_with_parent:
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cgroup is not None:
            cgroup.enter()
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)

    return prepare


def check_exec_size(run: TaskRun) -> None:
    """Raises E2BIG where the kernel would refuse to exec the task: one argument or variable
    longer than a page-bounded string may be, or all of them beyond the argument space. Checked
    before the task starts, so a launch that can never succeed is said at once."""
    argv: Sequence[str] = run.command
    if run.confinement is not None and run.bwrap:
        argv = bwrap_argv(run.bwrap, run.confinement, run.command)
    env = task_environment(run.env, run.workdir)
    strings = [a.encode() for a in argv] + [f"{k}={v}".encode() for k, v in env.items()]
    total = sum(len(x) + 1 + 8 for x in strings)  # each string, its NUL and its pointer
    if any(len(x) + 1 > MAX_ARG_STRLEN for x in strings) or total > os.sysconf("SC_ARG_MAX"):
        raise OSError(errno.E2BIG, os.strerror(errno.E2BIG))


def host_cores(chip_ids: Sequence[int]) -> tuple[int, ...]:
    """The cores of this machine that `cpu` chips `chip_ids` are: chip i is the i-th core the
    executor may use (wrapping around where a node claims more chips than it has cores)."""
    cores = sorted(os.sched_getaffinity(0))
    return tuple(sorted({cores[i % len(cores)] for i in chip_ids}))


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    if n % (1024 * MIB) == 0:
        return f"{n // (1024 * MIB)} GiB"
    return f"{n / MIB:.0f} MiB"


def run_of(launch: TaskLaunch, bwrap: str | None) -> TaskRun:
    """How this node runs `launch`: `cpu` chips become cores (affinity, cpuset and quota);
    other flavors' chips arrive in their device variable, set with the rest of the
    environment. Confined when `bwrap` is given."""
    env = dict(launch.env)
    cpus: tuple[int, ...] = ()
    quota: float | None = None
    if launch.flavor == "cpu" and launch.chip_ids:
        cpus = host_cores(launch.chip_ids)
        quota = float(len(launch.chip_ids))
    workdir = launch.workdir or env.get("RAINIER_WORKDIR")
    confinement = None
    if bwrap is not None and launch.uid is not None and workdir:
        confinement = Confinement(
            uid=launch.uid,
            read_write=launch.read_write,
            read_only=tuple(p for p in launch.read_only if _may_read(launch, p)),
            workdir=workdir,
            hidden=launch.hidden,
            cpus=cpus,
            gpu_devices=launch.device_env not in (None, "cpu"),
        )
    return TaskRun(
        task_id=launch.task_id,
        command=tuple(launch.command),
        env=env,
        workdir=workdir,
        cpus=cpus,
        memory_bytes=launch.memory_bytes if confinement else None,
        cpu_quota_cores=quota if confinement else None,
        confinement=confinement,
        bwrap=bwrap if confinement else None,
        log_path=str(launch.log_path),
    )


def _may_read(launch: TaskLaunch, path: str) -> bool:
    assert launch.uid is not None
    for root in launch.input_roots:
        if _within(path, root):
            return readable_by(launch.uid, path, below=root)
    return readable_by(launch.uid, path)


def make_folders(run: TaskRun, launch: TaskLaunch) -> None:
    """The task's own folders exist before it starts and, confined, belong to its tenant; so
    do the inputs it is given from the tenant's own places in the control plane's storage (a
    model uploaded to its prefix, written by the server's user, must be readable by it)."""
    for path in (*launch.read_write, *([run.workdir] if run.workdir else [])):
        os.makedirs(path, exist_ok=True)
        if run.confinement is not None:
            os.chown(path, run.confinement.uid, run.confinement.uid)
            os.chmod(path, 0o700)
    if run.confinement is not None:
        for path in run.confinement.read_only:
            if any(_within(path, root) for root in launch.input_roots):
                _own_tree(path, run.confinement.uid)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _own_tree(path: str, uid: int) -> None:
    for top, dirs, files in os.walk(path):
        for name in [top, *(os.path.join(top, n) for n in (*dirs, *files))]:
            with contextlib.suppress(OSError):
                if os.lstat(name).st_uid != uid:
                    os.lchown(name, uid, uid)
