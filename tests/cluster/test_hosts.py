"""The hosts the cluster tests run on are separate machines in what matters to rainier: their
own address, their own writable folders, and a kill that takes every process of a host down."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from .hosts import REPO, Host, Network
from .rainier_cluster import wait_until

SERVE = (
    "import http.server as h, sys; "
    "h.HTTPServer((sys.argv[1], 8080), h.SimpleHTTPRequestHandler).serve_forever()"
)


def reaches(host: Host, address: str) -> bool:
    """Whether `host` can open a connection to port 8080 at `address`."""
    connect = f"import socket; socket.create_connection(({address!r}, 8080), 2)"
    return host.run(["python3", "-c", connect], check=False).returncode == 0


def test_hosts_reach_each_other_but_share_no_writable_folder(tmp_path: Path) -> None:
    with Network() as net:
        a, b = net.add_host("a"), net.add_host("b")
        assert a.address != b.address
        a.run(["sh", "-c", "echo only-a > /tmp/mine && echo only-a > /dev/shm/mine"])
        assert a.read("/tmp/mine") == "only-a\n"
        assert b.read("/tmp/mine") is None and b.read("/dev/shm/mine") is None
        assert not Path("/tmp/mine").exists() and not Path("/dev/shm/mine").exists()
        (tmp_path / "the-tests").write_text("operator")
        assert a.read(str(tmp_path / "the-tests")) is None  # the test's folders are not theirs
        readonly = a.run(["touch", str(REPO / "written-by-a-host")], check=False)
        assert readonly.returncode != 0 and "Read-only" in readonly.stderr

        a.spawn([sys.executable, "-c", SERVE, a.address], tmp_path / "a.log")
        wait_until(lambda: reaches(b, "a"), 30, "a's server, by name, from b")
        assert httpx.get(f"http://{a.address}:8080/", timeout=5).status_code == 200

        in_a = a.pids()
        assert len(in_a) >= 2  # the process holding its namespaces and the server
        a.kill()
        assert a.pids() == []
        assert all(not Path(f"/proc/{pid}").exists() for pid in in_a)
        assert not reaches(b, a.address)
