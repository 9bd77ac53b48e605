"""The cluster tests build separate hosts out of namespaces, which needs root and iproute2; where
that cannot be had they are skipped with the reason. Every run ends by checking that nothing of
the hosts is left on this machine: no network namespace, no mount on /tmp, no cgroup."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .hosts import REPO, unavailable

CLUSTER_TIMEOUT_S = 600  # a test and its share of building the cluster, on a busy machine
MISSING = (
    unavailable()
    or (
        None
        if (REPO / ".venv" / "bin" / "ray").exists()
        else "the hosts run Ray from .venv/bin/ray"
    )
    or (
        f"the checkout ({REPO}) lies under /tmp, which every host replaces with its own"
        if REPO.resolve().is_relative_to("/tmp")
        else None
    )
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.timeout(CLUSTER_TIMEOUT_S))
            if MISSING:
                item.add_marker(pytest.mark.skip(reason=MISSING))


def leftovers() -> list[str]:
    """What the hosts of a run could leave behind, as found now."""
    found: list[str] = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"network namespace {line.split()[0]}" for line in netns.splitlines() if line]
    mounts = subprocess.run(["mount"], capture_output=True, text=True).stdout
    found += [f"mount {line}" for line in mounts.splitlines() if " /tmp " in line]
    for parent in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        found += [f"cgroup {p}" for p in parent.glob("rainier-cluster-*")]
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """A test of this folder leaves the machine as it found it (the shared cluster is checked
    when it is taken down)."""
    before = set(leftovers())
    yield
    after = set(leftovers()) - before
    assert not after, after
