"""One cgroup per task: its memory limit, its CPU quota and cores, and whether it ran out of memory.

Works on cgroup v1 (a hierarchy per controller under /sys/fs/cgroup/<controller>) and v2 (one
unified hierarchy). A task's cgroup is `rainier/<task id>` in each; the wrapper that starts the
task creates it, moves the task's first process into it before it execs (so every descendant is
inside from the start), reads the OOM counter when the task ends and removes it.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
GROUP = "rainier"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpu_quota_cores: float | None = None
    cpus: tuple[int, ...] = ()


def version(root: Path = ROOT) -> int | None:
    """2 for a unified hierarchy with the memory controller, 1 for v1's, None without one."""
    if (root / "cgroup.controllers").exists():
        controllers = (root / "cgroup.controllers").read_text().split()
        return 2 if "memory" in controllers else None
    if (root / "memory" / "cgroup.procs").exists():
        return 1
    return None


class TaskCgroup:
    """The cgroup(s) of one task; every method tolerates a machine without them."""

    def __init__(self, task_id: str, limits: Limits, root: Path = ROOT):
        self.limits = limits
        self.root = root
        self.version = version(root)
        name = task_id.replace("/", "_")
        if self.version == 2:
            self.dirs = {"unified": root / GROUP / name}
        elif self.version == 1:
            self.dirs = {c: root / c / GROUP / name for c in ("memory", "cpu", "cpuset")}
            self.dirs = {c: d for c, d in self.dirs.items() if d.parent.parent.exists()}
        else:
            self.dirs = {}

    def create(self) -> None:
        if self.version == 2:
            self._create_v2()
        elif self.version == 1:
            self._create_v1()

    def _create_v1(self) -> None:
        for controller, path in self.dirs.items():
            parent = path.parent
            parent.mkdir(exist_ok=True)
            path.mkdir(exist_ok=True)
            if controller == "cpuset":
                for key in ("cpuset.cpus", "cpuset.mems"):
                    for level in (parent, path):
                        if not (level / key).read_text().strip():
                            _write(level / key, (level.parent / key).read_text().strip())
        lim = self.limits
        if lim.memory_bytes and "memory" in self.dirs:
            _write(self.dirs["memory"] / "memory.limit_in_bytes", str(lim.memory_bytes))
            with contextlib.suppress(OSError):
                _write(self.dirs["memory"] / "memory.swappiness", "0")
        if lim.cpu_quota_cores and "cpu" in self.dirs:
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            quota = max(1000, int(lim.cpu_quota_cores * CPU_PERIOD_US))
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
        if lim.cpus and "cpuset" in self.dirs:
            _write(self.dirs["cpuset"] / "cpuset.cpus", ",".join(map(str, lim.cpus)))

    def _create_v2(self) -> None:
        path = self.dirs["unified"]
        parent = path.parent
        parent.mkdir(exist_ok=True)
        wanted = [c for c in ("memory", "cpu", "cpuset") if c in _controllers(self.root)]
        for level in (self.root, parent):
            with contextlib.suppress(OSError):
                _write(level / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        path.mkdir(exist_ok=True)
        lim = self.limits
        if lim.memory_bytes:
            _write(path / "memory.max", str(lim.memory_bytes))
            with contextlib.suppress(OSError):
                _write(path / "memory.swap.max", "0")
        if lim.cpu_quota_cores and (path / "cpu.max").exists():
            quota = max(1000, int(lim.cpu_quota_cores * CPU_PERIOD_US))
            _write(path / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        if lim.cpus and (path / "cpuset.cpus").exists():
            _write(path / "cpuset.cpus", ",".join(map(str, lim.cpus)))

    def enter(self, pid: int = 0) -> None:
        """Moves `pid` (0: the caller) into every controller's group; run in the child before
        it execs, so nothing the task starts is ever outside."""
        for path in self.dirs.values():
            _write(path / "cgroup.procs", str(pid or os.getpid()))

    def oom_killed(self) -> bool:
        if self.version == 2 and "unified" in self.dirs:
            return _counter(self.dirs["unified"] / "memory.events", "oom_kill") > 0
        if "memory" in self.dirs:
            return _counter(self.dirs["memory"] / "memory.oom_control", "oom_kill") > 0
        return False

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.dirs.values():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return sorted(found)

    def remove(self, wait_s: float = 2.0) -> None:
        """Removes the groups once their last process is gone (a killed task's stragglers
        take a moment to be reaped)."""
        deadline = time.monotonic() + wait_s
        for path in self.dirs.values():
            while path.exists():
                try:
                    path.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)


def _controllers(root: Path) -> list[str]:
    try:
        return (root / "cgroup.controllers").read_text().split()
    except OSError:
        return []


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _write(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
