"""The sandbox's parts that need no server: uids per tenant, which inputs may be bound, the
chips a node hands out, and the command line bubblewrap gets."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rainier.control.sandbox import CPU_TOPOLOGY, Confinement, bwrap_argv, readable_by
from rainier.control.uids import TenantUids, parse_range
from rainier.scheduler.chips import assign_gang, held_chips, pick_chips
from rainier.store.db import Store


def test_each_tenant_keeps_one_uid_and_no_two_share_one(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    uids = TenantUids(store, (5000, 5002))
    a, b = uids.uid_of("tenant-a"), uids.uid_of("tenant-b")
    assert a != b and {a, b} <= {5000, 5001, 5002}
    again = TenantUids(store, (5000, 5002))  # another control plane on the same database
    assert (again.uid_of("tenant-a"), again.uid_of("tenant-b")) == (a, b)
    again.uid_of("tenant-c")
    with pytest.raises(RuntimeError, match="every uid"):
        again.uid_of("tenant-d")
    store.dispose()


@pytest.mark.parametrize("text", ["0-10", "abc", "2000-1000", "1-"])
def test_a_wrong_uid_range_names_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match="RAINIER_SANDBOX_UIDS"):
        parse_range(text)


def test_chips_are_the_lowest_free_and_never_shared_while_counts_agree() -> None:
    assert pick_chips(8, {0, 1}, 2) == [2, 3]
    held = held_chips([{"nodes": ["a", "b"], "chips": [[0], [3]]}])
    assert assign_gang(["a", "b"], 2, {"a": 4, "b": 4}, held) == [[1, 2], [0, 1]]
    assert held == {"a": {0, 1, 2}, "b": {0, 1, 3}}
    assert pick_chips(2, {0, 1}, 1) == [0]  # over-committed: shared, not refused


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder under /tmp whose ancestors any user may search (pytest's own are private)."""
    path = Path(tempfile.mkdtemp(prefix="rainier-perm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_inputs_are_bound_only_where_the_tenants_user_may_read_them(open_dir: Path) -> None:
    tmp_path = open_dir
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o711)
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    os.chown(own, 5555, 5555)
    assert not readable_by(5555, str(private))
    assert readable_by(5555, str(shared))
    assert readable_by(5555, str(own))
    assert not readable_by(5556, str(own))
    assert not readable_by(5555, str(tmp_path / "missing"))
    os.chmod(tmp_path, 0o700)
    assert not readable_by(5555, str(shared))  # a folder above it is closed
    assert readable_by(5555, str(own), below=str(tmp_path))
    assert not readable_by(5555, str(tmp_path), below=str(tmp_path))


def test_the_command_line_drops_to_the_tenants_user_and_binds_only_its_folders() -> None:
    conf = Confinement(
        uid=901234,
        read_write=("/srv/home/checkpoints/job-1",),
        read_only=("/data/corpus",),
        workdir="/srv/home/work/job-1/rank-0",
        hidden=("/srv/home",),
        runtime=("/opt/py",),
    )
    argv = bwrap_argv("/usr/bin/bwrap", conf, ["python", "-c", "pass"])
    joined = " ".join(argv)
    assert "--unshare-pid" in argv and "--unshare-ipc" in argv and "--die-with-parent" in argv
    assert "--bind /srv/home/checkpoints/job-1 /srv/home/checkpoints/job-1" in joined
    assert "--ro-bind-try /data/corpus /data/corpus" in joined
    assert "--ro-bind /opt/py /opt/py" in joined
    assert "--reuid=901234" in argv and "--bounding-set=-all" in argv
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    assert not any(b == "/srv/home" or b == "/" for b in binds)
    assert argv[-3:] == ["python", "-c", "pass"]


def test_a_cpu_task_sees_the_cpu_topology_and_nothing_else_of_sys() -> None:
    """Runtimes (vLLM's CPU worker, OpenMP) read cores and NUMA nodes from /sys; the rest of it
    (cgroups naming other tasks, network devices) stays out of a CPU task's view."""
    conf = Confinement(uid=901234, read_write=(), read_only=(), workdir="/w", runtime=())
    argv = bwrap_argv("/usr/bin/bwrap", conf, ["true"])
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    sys_binds = [b for b in binds if b == "/sys" or b.startswith("/sys/")]
    present = [p for p in CPU_TOPOLOGY if Path(p).is_dir()]
    assert sys_binds == present
    for path in present:
        assert f"--ro-bind {path} {path}" in " ".join(argv)
