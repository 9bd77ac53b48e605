"""Separate hosts on one machine: each host is a network namespace with its own address on a
private bridge, and a mount namespace of its own whose /tmp, /dev/shm and home are fresh tmpfs,
so no two hosts (and not this test process) share a writable folder. The project's checkout is
visible to every host read-only, as an installed package would be.

Every process a host runs is put in the host's own `pids` cgroup, which is how `Host.kill` finds
and ends all of them, however deep (Ray's daemons, its workers, a sandboxed task). Everything
made here is undone by `Network.close`, also after a failure half-way: hosts are killed, their
namespaces deleted (which deletes their veths and the bridge), their cgroups removed.

Needs root, `ip` (iproute2), `nsenter` and `unshare` (util-linux) and a cgroup v1 `pids`
hierarchy or cgroup v2; `unavailable()` says what is missing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NETNS_DIR = Path("/var/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
STEP_TIMEOUT_S = 30.0
KILL_DEADLINE_S = 20.0
HOST_TMPFS_SIZE = "4g"


def unavailable() -> str | None:
    """Why hosts cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "separate hosts need root (network and mount namespaces)"
    for tool in ("ip", "nsenter", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"separate hosts need `{tool}`"
    if _pids_cgroup_parent() is None:
        return "separate hosts need a `pids` cgroup to find their processes"
    probe = f"rcprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces cannot be made here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _pids_cgroup_parent() -> Path | None:
    v1 = CGROUP_ROOT / "pids"
    if (v1 / "cgroup.procs").exists():
        return v1
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return CGROUP_ROOT
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Host:
    """One machine: a network namespace, a mount namespace held open by a sleeping process,
    and a cgroup holding every process started in it."""

    name: str
    netns: str
    address: str
    cgroup: Path
    holder: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)
    alive: bool = True

    def _argv(self, argv: Sequence[str], env: Mapping[str, str] | None) -> list[str]:
        merged = {**self.env, **(env or {})}
        enter = [
            "nsenter",
            f"--target={self.holder.pid}",
            "--mount",
            "--net",
            "--uts",
            f"--wd={REPO}",
        ]
        joins = f'echo $$ > {self.cgroup / "cgroup.procs"} && exec "$@"'
        return [*enter, "env", "-i", *(f"{k}={v}" for k, v in merged.items()), "sh", "-c",
                joins, "sh", *argv]  # fmt: skip

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout_s: float = STEP_TIMEOUT_S,
        check: bool = True,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs a command on this host to its end, within `timeout_s`."""
        self._require_alive()
        done = subprocess.run(
            self._argv(argv, env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            input=stdin,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{self.name}: {' '.join(argv)} exited {done.returncode}:\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def spawn(
        self, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Starts a long-running command on this host; its output goes to `log`, a file of
        the test process (the host itself cannot see it)."""
        self._require_alive()
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self._argv(argv, env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.spawned.append(proc)
        return proc

    def read(self, path: str) -> str | None:
        """A file on this host's own filesystem (None when it is not there)."""
        done = self.run(["cat", path], check=False)
        return done.stdout if done.returncode == 0 else None

    def pids(self) -> list[int]:
        with contextlib.suppress(FileNotFoundError):
            text = (self.cgroup / "cgroup.procs").read_text()
            return [int(p) for p in text.split()]
        return []

    def end_processes(self) -> None:
        """Ends every process of the host but the one holding its namespaces (a reboot)."""
        deadline = time.monotonic() + KILL_DEADLINE_S
        while pids := [p for p in self.pids() if p != self.holder.pid]:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: processes {pids} outlived SIGKILL")
            time.sleep(0.05)
        for proc in self.spawned:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.spawned.clear()

    def kill(self) -> None:
        """Pulls the plug: every process of the host gets SIGKILL, then its network is gone."""
        if not self.alive:
            return
        self.alive = False
        deadline = time.monotonic() + KILL_DEADLINE_S
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: processes {pids} outlived SIGKILL")
            time.sleep(0.05)
        for proc in [self.holder, *self.spawned]:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", self.netns)
        with contextlib.suppress(OSError):
            self.cgroup.rmdir()

    def _require_alive(self) -> None:
        if not self.alive:
            raise RuntimeError(f"host {self.name} was killed")


class Network:
    """A bridge in a namespace of its own that hosts plug into; this test process reaches them
    through one more veth (in this process's namespace, removed with the bridge's namespace)."""

    def __init__(self, base_env: Mapping[str, str] | None = None):
        self.token = secrets.token_hex(3)
        self.prefix = f"10.{100 + int(self.token[:2], 16) % 100}.{int(self.token[2:4], 16)}"
        self.switch = f"rcsw{self.token}"
        self.uplink = f"rcup{self.token}"
        self.gateway = f"{self.prefix}.1"
        self.base_env = dict(base_env or {})
        self.hosts: dict[str, Host] = {}
        parent = _pids_cgroup_parent()
        assert parent is not None, unavailable()
        self.cgroups = parent / f"rainier-cluster-{self.token}"
        self._made_switch = False

    def __enter__(self) -> Network:
        try:
            self.cgroups.mkdir()
            _ip("netns", "add", self.switch)
            self._made_switch = True
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            _ip("link", "add", self.uplink, "type", "veth", "peer", "name", "uplink",
                "netns", self.switch)  # fmt: skip
            _ip("-n", self.switch, "link", "set", "uplink", "master", "br0", "up")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.uplink)
            _ip("link", "set", self.uplink, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, name: str) -> Host:
        """A new host, reachable from the others and from this process at its own address."""
        index = len(self.hosts) + 2
        netns = f"rc{self.token}{name}"[:32]
        address = f"{self.prefix}.{index}"
        cgroup = self.cgroups / name
        cgroup.mkdir()
        _ip("netns", "add", netns)
        created = Host(name, netns, address, cgroup, holder=_NO_HOLDER, alive=True)
        self.hosts[name] = created
        veth = f"rc{self.token}h{index}"
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", veth, "master", "br0", "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        created.holder = _hold(name, netns, cgroup)
        created.env = {
            **self.base_env,
            "HOME": "/tmp/home",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",  # PostgreSQL's initdb takes its encoding from it
            "PYTHONDONTWRITEBYTECODE": "1",
            "RAINIER_TEST_HOST": name,
        }
        created.run(["mkdir", "-p", "/tmp/home"])
        table = "127.0.0.1 localhost\n" + "".join(
            f"{h.address} {h.name}\n" for h in self.hosts.values()
        )
        for host in self.hosts.values():
            if host.alive:
                host.run(["sh", "-c", "cat > /tmp/etc/hosts"], stdin=table)
        return created

    def close(self) -> None:
        errors: list[str] = []
        for host in self.hosts.values():
            try:
                host.kill()
            except RuntimeError as exc:
                errors.append(str(exc))
        if self._made_switch:
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", self.switch)
            self._made_switch = False
            _wait_gone(self.uplink)
        with contextlib.suppress(OSError):
            self.cgroups.rmdir()
        if errors:
            raise RuntimeError("; ".join(errors))


def _wait_gone(link: str) -> None:
    """The kernel dismantles a deleted namespace's devices a moment later."""
    deadline = time.monotonic() + KILL_DEADLINE_S
    while subprocess.run(["ip", "link", "show", link], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the link {link} outlived its namespace")
        time.sleep(0.05)


class _Unstarted:
    pid = -1

    def kill(self) -> None:
        return None

    def wait(self, timeout: float | None = None) -> int:
        return 0


_NO_HOLDER: subprocess.Popen[bytes] = _Unstarted()  # type: ignore[assignment]

# The host's mount namespace: nothing it mounts reaches this process's namespace (private
# propagation); /tmp and /dev/shm are its own, the checkout is read-only, names resolve from the
# cluster's own hosts table and never through a DNS server the host cannot reach.
_MOUNTS = (
    'set -e; mount --make-rprivate /; hostname "$1"; '
    f"mount -t tmpfs -o size={HOST_TMPFS_SIZE},mode=1777 host-tmp /tmp; "
    f"mount -t tmpfs -o size={HOST_TMPFS_SIZE},mode=1777 host-shm /dev/shm; "
    f"mount --bind {REPO} {REPO}; mount -o remount,bind,ro {REPO}; "
    "mkdir /tmp/etc; : > /tmp/etc/resolv.conf; echo 127.0.0.1 localhost > /tmp/etc/hosts; "
    "mount --bind /tmp/etc/resolv.conf /etc/resolv.conf; mount --bind /tmp/etc/hosts /etc/hosts; "
    "echo ready; exec sleep infinity"
)


def _hold(name: str, netns: str, cgroup: Path) -> subprocess.Popen[bytes]:
    joins = f"echo $$ > {cgroup / 'cgroup.procs'} && {_MOUNTS}"
    holder = subprocess.Popen(
        [
            "nsenter",
            f"--net={NETNS_DIR / netns}",
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
            "-c",
            joins,
            "sh",
            name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()  # the mounts are made once it says so
    if line.strip() != b"ready":
        holder.kill()
        err = holder.stderr.read().decode() if holder.stderr else ""
        raise RuntimeError(f"the host's mount namespace failed: {err.strip()}")
    return holder
