"""rainier on separate hosts, as an operator runs it (docs/cluster.md): a control host with
PostgreSQL, the Ray head, an S3-protocol object store and the rainier server; worker hosts
that each run a Ray worker node offering chips. Nothing is shared but the network and the
read-only installation.

The test process plays the operator's laptop: it reaches the control host over the network
and never puts a file where a host could read it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

from rainier.cli.client import Client

from .hosts import REPO, Host, Network

VENV_BIN = REPO / ".venv" / "bin"
RAY_PORT = 6379
API_PORT = 8000
S3_PORT = 9000
S3_REGION = "us-east-1"
S3_KEY = ("rainier-cluster", "rainier-cluster-secret")  # moto takes any key
BUCKET = "rainier-cluster"
HOME = "/tmp/rainier"  # RAINIER_HOME on every host: the same path, a different disk each
FLAVOR = "h200"
CHIPS = 8
START_DEADLINE_S = 240.0  # Ray nodes start in seconds, on a busy machine in minutes
WORKER_NAMES = ("w1", "w2", "w3")
JOIN_TRIES = 2


def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 60.0, what: str = "", every_s: float = 0.1
) -> Any:
    """Polls `predicate` until it returns something truthy; fails at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(every_s)


@dataclass
class RainierCluster:
    network: Network
    control: Host
    workers: dict[str, Host]
    logs: Path  # the test's own copy of each host daemon's output, for failure messages
    ray_token: str
    storage_url: str = f"s3://{BUCKET}/cloud"
    storage_env: dict[str, str] = field(default_factory=dict)
    s3: Any = None  # the operator's own S3 client
    op: Client | None = None  # the operator's key, from the one `init` a control plane answers

    @property
    def url(self) -> str:
        return f"http://{self.control.address}:{API_PORT}"

    def operator(self) -> Client:
        if self.op is None:
            self.op = Client(self.url, Client(self.url).post("/api/v1/init")["key"])
        return self.op

    def tenant(self, name: str) -> Client:
        op = self.operator()
        if name not in {t["name"] for t in op.get("/api/v1/tenants")["items"]}:
            op.post("/api/v1/tenants", {"kind": "Tenant", "name": name})
        return Client(self.url, op.post("/api/v1/keys", {"tenant": name, "role": "admin"})["key"])

    def nodes(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.operator().get("/api/v1/nodes")["items"]
        return items

    def daemon_logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.iterdir())
        )

    def host_of(self, node: str) -> Host:
        return self.workers[node]


def _ray_env(token: str) -> dict[str, str]:
    return {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def _start_control(cluster: RainierCluster) -> None:
    control = cluster.control
    pg = control.run(["bash", "scripts/start-postgres.sh"], timeout_s=START_DEADLINE_S)
    database_url = pg.stdout.strip().splitlines()[-1]
    system = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
    control.spawn(
        ["ray", "start", "--head", "--block", f"--node-ip-address={control.address}",
         f"--port={RAY_PORT}", "--num-cpus=0", "--include-dashboard=false",
         "--object-store-memory=80000000", f"--system-config={json.dumps(system)}"],
        cluster.logs / "control-ray.log",
    )  # fmt: skip
    control.spawn(
        ["python", "-m", "moto.server", "-H", control.address, "-p", str(S3_PORT)],
        cluster.logs / "control-s3.log",
    )
    endpoint = f"http://{control.address}:{S3_PORT}"
    wait_until(lambda: _answers(f"{endpoint}/moto-api/"), START_DEADLINE_S, "the S3 server")
    cluster.s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name=S3_REGION,
        aws_access_key_id=S3_KEY[0], aws_secret_access_key=S3_KEY[1],
    )  # fmt: skip
    cluster.s3.create_bucket(Bucket=BUCKET)
    cluster.storage_env = {
        "RAINIER_STORAGE_URL": cluster.storage_url,
        "RAINIER_STORAGE_ENDPOINT_URL": endpoint,
        "RAINIER_STORAGE_REGION": S3_REGION,
        "RAINIER_STORAGE_KEY_ID": S3_KEY[0],
        "RAINIER_STORAGE_SECRET_KEY": S3_KEY[1],
    }
    server_env = {
        "RAINIER_HOME": HOME,
        "RAINIER_DATABASE_URL": database_url,
        "RAINIER_EXECUTOR": "ray",
        "RAINIER_RAY_ADDRESS": f"{control.address}:{RAY_PORT}",
        "RAINIER_HOST": control.address,
        "RAINIER_PORT": str(API_PORT),
        "RAINIER_TICK_S": "0.1",
        **cluster.storage_env,
    }
    control.spawn(["rainier", "server"], cluster.logs / "control-rainier.log", env=server_env)


def _start_worker(cluster: RainierCluster, host: Host, zone: str) -> subprocess.Popen[bytes]:
    labels = f"rainier.io/node={host.name},rainier.io/zone={zone},rainier.io/block={host.name}"
    return host.spawn(
        ["ray", "start", "--block", f"--address={cluster.control.address}:{RAY_PORT}",
         f"--node-ip-address={host.address}", "--num-cpus=0", "--object-store-memory=80000000",
         f"--resources={json.dumps({f'rainier-chips-{FLAVOR}': CHIPS})}", f"--labels={labels}"],
        cluster.logs / f"{host.name}-ray.log",
    )  # fmt: skip


def _join(cluster: RainierCluster, host: Host, zone: str) -> None:
    """One worker at a time, and once more when Ray gave up on it: `ray start` waits 30 s for
    its raylet to register, which a busy machine does not always grant."""
    for _ in range(JOIN_TRIES):
        started = _start_worker(cluster, host, zone)
        outcome = wait_until(
            lambda p=started: _joined(cluster, host, p), START_DEADLINE_S, f"{host.name}"
        )
        if outcome == "joined":
            return
        host.end_processes()  # what Ray left of the failed start
    raise AssertionError(f"{host.name} did not join the Ray cluster in {JOIN_TRIES} tries")


def _joined(cluster: RainierCluster, host: Host, started: subprocess.Popen[bytes]) -> str | None:
    if host.name in _names(cluster):
        return "joined"
    return "gave up" if started.poll() is not None else None


def _names(cluster: RainierCluster) -> set[str]:
    return {n["name"] for n in cluster.nodes()}


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


@contextmanager
def rainier_cluster(
    logs: Path, workers: tuple[str, ...] = WORKER_NAMES
) -> Iterator[RainierCluster]:
    """Builds the hosts and starts everything; tears all of it down on the way out, also when
    building failed half-way."""
    token = secrets.token_hex(16)
    logs.mkdir(parents=True, exist_ok=True)
    with Network(base_env=_ray_env(token)) as network:
        control = network.add_host("control")
        hosts = {name: network.add_host(name) for name in workers}
        cluster = RainierCluster(network, control, hosts, logs, token)
        _start_control(cluster)
        try:
            wait_until(lambda: _answers(f"{cluster.url}/healthz"), START_DEADLINE_S, "the API")
            for i, host in enumerate(hosts.values()):
                _join(cluster, host, zone=f"zone-{i % 2}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{cluster.daemon_logs()}") from None
        yield cluster


def remove_logs(logs: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(logs)
