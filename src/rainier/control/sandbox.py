"""What a task runs inside: bubblewrap namespaces, its tenant's unprivileged user, cgroup limits.

A sandboxed task sees the system read-only (`/usr`, `/etc`, the libraries), the interpreter and
installed packages read-only, a private `/tmp`, its job's work and checkpoint folders
read-write and the models and data it was given read-only; nothing else of the machine, and
none of `RAINIER_HOME` but those folders. It has its own PID, IPC and UTS namespaces, runs as
its tenant's uid with no capabilities, and its environment is the job's own (never the
server's). The network is not isolated: the task must reach the control plane and its peers.

The outer bubblewrap process ignores SIGTERM, so a stop request (SIGTERM to the task's process
group) reaches the workload instead of tearing the sandbox down; `env --default-signal` gives
the workload the default handling back. SIGKILL still ends everything at once: bubblewrap's
init is killed with its parent, and with it the whole PID namespace.

The sandbox is used when the machine can give it (root, `bwrap` on PATH) unless
`RAINIER_ISOLATION=off`; `RAINIER_ISOLATION=required` refuses to start a task without it.
"""

from __future__ import annotations

import enum
import functools
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Device nodes a GPU task needs besides its chips; the chips themselves are chosen by the
# flavor's device variable, which is what CUDA and ROCm honour.
CPU_TOPOLOGY = ("/sys/devices/system/cpu", "/sys/devices/system/node")
GPU_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "kfd", "dri")


class IsolationMode(enum.StrEnum):
    """`RAINIER_ISOLATION`: use the sandbox when it can be had, always, or never."""

    AUTO = "auto"
    REQUIRED = "required"
    OFF = "off"


class Isolation(enum.StrEnum):
    """What a node gives its tasks, as `rainier node ls` shows it."""

    SANDBOX = "sandbox"
    NONE = "none"
    UNKNOWN = "unknown"


class SandboxUnavailable(RuntimeError):
    """`RAINIER_ISOLATION=required` and this machine cannot give a sandbox."""


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str
    bwrap: str | None = None

    @property
    def isolation(self) -> Isolation:
        return Isolation.SANDBOX if self.ok else Isolation.NONE


@functools.cache
def probe() -> Availability:
    """Whether this machine can sandbox tasks; the answer does not change while it runs."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Availability(False, "bubblewrap (bwrap) is not installed")
    if shutil.which("setpriv") is None or shutil.which("env") is None:
        return Availability(False, "setpriv or env (util-linux, coreutils) is missing")
    if os.geteuid() != 0:
        return Availability(False, "the server does not run as root, so it cannot switch users")
    return Availability(True, "bubblewrap, tenant uids, cgroups", bwrap)


def decide(mode: IsolationMode) -> Availability | None:
    """The availability to sandbox with, or None to run bare; raises when it is required."""
    if mode == IsolationMode.OFF:
        return None
    found = probe()
    if found.ok:
        return found
    if mode == IsolationMode.REQUIRED:
        raise SandboxUnavailable(
            f"RAINIER_ISOLATION=required but this machine cannot sandbox tasks: {found.reason}"
        )
    return None


@dataclass(frozen=True)
class Confinement:
    """Everything the wrapper on the node needs to confine one task; JSON-safe."""

    uid: int
    read_write: tuple[str, ...]
    read_only: tuple[str, ...]
    workdir: str
    hidden: tuple[str, ...] = ()
    memory_bytes: int | None = None
    cpu_quota_cores: float | None = None
    cpus: tuple[int, ...] = ()
    gpu_devices: bool = False
    runtime: tuple[str, ...] = field(default_factory=lambda: tuple(runtime_roots()))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Confinement:
        tuples = ("read_write", "read_only", "hidden", "cpus", "runtime")
        values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in data.items()}
        return cls(**values)


def runtime_roots() -> list[str]:
    """Where the interpreter, the installed packages and rainier itself live, outside the
    system folders: bound read-only so a task can run Python and `rainier.train`."""
    import rainier
    from rainier.engines.vllm_launch import runtime_roots as vllm_runtime_roots

    candidates = [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    candidates += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    candidates.append(str(Path(rainier.__file__).resolve().parent.parent))
    candidates += vllm_runtime_roots()
    return _outermost(os.path.realpath(p) for p in candidates if not _under_system(p))


def _under_system(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d + "/") for d in SYSTEM_DIRS)


def _outermost(paths: Iterable[str]) -> list[str]:
    out: list[str] = []
    for path in sorted(set(paths), key=len):
        if path in ("/", "") or any(path == o or path.startswith(o + "/") for o in out):
            continue
        out.append(path)
    return sorted(out)


def bwrap_argv(bwrap: str, conf: Confinement, command: Sequence[str]) -> list[str]:
    """The command line that runs `command` confined as `conf` says."""
    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--hostname", "rainier-task"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]
    if conf.gpu_devices:
        # GPU libraries (NCCL's topology, the driver) read /sys; its cgroup tree would name
        # other tasks, so that part stays hidden
        argv += ["--ro-bind", "/sys", "/sys", "--tmpfs", "/sys/fs/cgroup"]
        for name in sorted(os.listdir("/dev")):
            if name in GPU_DEVICES or (name.startswith("nvidia") and name[6:].isdigit()):
                argv += ["--dev-bind-try", f"/dev/{name}", f"/dev/{name}"]
    # trees mounted above (no --dir inside them) and folders made already
    made: list[str] = ["/dev", "/proc", *SYSTEM_DIRS, "--dir /tmp"]
    if not conf.gpu_devices:
        # the CPU topology alone (cores, NUMA nodes): runtimes size and pin their thread pools
        # from it (vLLM's CPU worker runs lscpu, which fails without it)
        for path in CPU_TOPOLOGY:
            if os.path.isdir(path):
                argv += [*_parents(path, made), "--ro-bind", path, path]
    for path in conf.runtime:
        argv += [*_parents(path, made), "--ro-bind", path, path]
        made.append(path)
    for path in conf.hidden:  # RAINIER_HOME, where it lies under a folder bound above
        if _within(path, conf.runtime):
            argv += ["--tmpfs", path]
            made.append(path)
    for path in conf.read_only:
        argv += [*_parents(path, made), "--ro-bind-try", path, path]
    for path in conf.read_write:
        argv += [*_parents(path, made), "--bind", path, path]
    argv += ["--chdir", conf.workdir, "--"]
    argv += ["setpriv", f"--reuid={conf.uid}", f"--regid={conf.uid}", "--clear-groups"]
    argv += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    argv += ["env", "--default-signal=TERM,INT", "--", *command]
    return argv


def _within(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _parents(path: str, made: list[str]) -> list[str]:
    """Folders above a mount point, made searchable: bubblewrap would copy the host's modes,
    and a private `/root` (0700) would hide the interpreter from the tenant's user."""
    out: list[str] = []
    parts = Path(path).parts
    for depth in range(2, len(parts)):
        parent = str(Path(*parts[:depth]))
        if _within(parent, made) or "--dir " + parent in made:
            continue
        out += ["--perms", "0755", "--dir", parent]
        made.append("--dir " + parent)
    return out


def task_environment(env: Mapping[str, str], workdir: str | None) -> dict[str, str]:
    """A task's environment: the job's own variables and a few neutral basics, never the
    server's (which may hold database passwords or cluster tokens)."""
    base = {
        "PATH": f"{os.path.dirname(sys.executable)}:{STANDARD_PATH}",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
    }
    if workdir:
        base["HOME"] = workdir
    return {**base, **env}


def readable_by(uid: int, path: str, below: str | None = None) -> bool:
    """Whether `uid` could read `path` by its own rights: every folder above it searchable and
    the path itself readable, by owner or by others. A sandbox binds a task's inputs only then,
    so naming a path never grants what the tenant's user could not read anyway (bind mounts
    skip the permission checks of the folders above). With `below`, only the folders under
    that one count: the control plane's checkpoint root, whose tenants' folders are their own."""
    real = os.path.realpath(path)
    parts = Path(real).parts
    first = 1
    if below is not None:
        root = os.path.realpath(below)
        if not _within(real, [root]) or real == root:
            return False
        first = len(Path(root).parts) + 1
    try:
        for depth in range(first, len(parts)):
            st = os.stat(Path(*parts[:depth]))
            if not _allows(st, uid, 0o1):
                return False
        st = os.stat(real)
    except OSError:
        return False
    need = 0o5 if os.path.isdir(real) else 0o4
    return _allows(st, uid, need)


def _allows(st: os.stat_result, uid: int, bits: int) -> bool:
    if st.st_uid == uid:
        return st.st_mode & (bits << 6) == bits << 6
    return st.st_mode & bits == bits


def describe(mode: str) -> str:
    """One line for the server's start: whether tasks will be sandboxed, and if not why."""
    if mode == IsolationMode.OFF:
        return "tasks are NOT isolated: RAINIER_ISOLATION=off"
    found = probe()
    if found.ok:
        return f"tasks run in a sandbox ({found.reason})"
    if mode == IsolationMode.REQUIRED:
        return f"tasks will NOT start: RAINIER_ISOLATION=required but {found.reason}"
    return f"tasks are NOT isolated: {found.reason} (see docs/security.md)"
