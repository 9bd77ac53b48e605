"""What the Ray tests and the launch benchmark share: a real multi-node Ray cluster on this
machine (a head and workers with chip resources and topology labels), a control plane in this
process on either executor, and waits with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client
from rainier.config import Settings

DEADLINE_S = 60.0


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    zone: str
    block: str
    flavor: str = "h200"
    chips: int = 8
    named: bool = True  # False: the node keeps the default name `ray-<node id>`


HEAD = WorkerSpec("n-a1", zone="us-a", block="a1")
WORKERS = (
    WorkerSpec("n-a2", zone="us-a", block="a2"),
    WorkerSpec("n-b1", zone="us-b", block="b1", named=False),
)


@dataclass
class RayCluster:
    """Chip-carrying nodes: the head (the driver's node, never removed) and the workers."""

    cluster: Any
    workers: dict[str, Any] = field(default_factory=dict)  # rainier node name -> Ray node
    specs: dict[str, WorkerSpec] = field(default_factory=dict)
    head_node_id: str = ""

    @property
    def names(self) -> list[str]:
        return [HEAD.name, *self.workers]

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def node_id(self, name: str) -> str:
        return self.head_node_id if name == HEAD.name else str(self.workers[name].node_id)

    def remove(self, name: str) -> None:
        self.cluster.remove_node(self.workers.pop(name), allow_graceful=False)


@contextmanager
def ray_environment() -> Iterator[Path]:
    """Ray's files in a short temp dir (its sockets must fit in 107 bytes), token auth on, with
    the token in the environment instead of the user's home."""
    temp = Path(tempfile.mkdtemp(prefix="rr-"))
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(
        RAY_TMPDIR=str(temp), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16)
    )
    _reload_ray_config()
    try:
        yield temp
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reload_ray_config()
        shutil.rmtree(temp, ignore_errors=True)


def _reload_ray_config() -> None:
    """Ray reads its auth mode and token once per process; this process may have read them."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _labels(spec: WorkerSpec) -> dict[str, str]:
    labels = {"rainier.io/zone": spec.zone, "rainier.io/block": spec.block}
    if spec.named:
        labels["rainier.io/node"] = spec.name
    return labels


@contextmanager
def ray_cluster(
    head: WorkerSpec = HEAD, workers: tuple[WorkerSpec, ...] = WORKERS
) -> Iterator[RayCluster]:
    import ray
    from ray.cluster_utils import Cluster

    with ray_environment():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "resources": {f"rainier-chips-{head.flavor}": head.chips},
                "labels": _labels(head),
                "include_dashboard": False,
                "_system_config": {
                    "health_check_period_ms": 500,
                    "health_check_failure_threshold": 4,
                },
            },
        )
        found = RayCluster(cluster, head_node_id=str(cluster.head_node.node_id))
        found.specs[head.name] = head
        try:
            for spec in workers:
                node = cluster.add_node(
                    wait=False,
                    num_cpus=0,
                    resources={f"rainier-chips-{spec.flavor}": spec.chips},
                    labels=_labels(spec),
                )
                name = spec.name if spec.named else f"ray-{node.node_id[:12]}"
                found.workers[name] = node
                found.specs[name] = spec
            cluster.wait_for_nodes(timeout=120)
            ray.init(
                address=cluster.address,
                namespace="rainier",
                logging_level="WARNING",
                log_to_driver=False,
            )
            yield found
        finally:
            ray.shutdown()
            cluster.shutdown()


@dataclass
class Cloud:
    server: EmbeddedServer
    op: Client
    executor: str

    @property
    def settings(self) -> Settings:
        return self.server.settings

    def tenant(self, name: str, role: str = "admin") -> Client:
        tenants = {t["name"] for t in self.op.get("/api/v1/tenants")["items"]}
        if name not in tenants:
            self.op.post("/api/v1/tenants", {"kind": "Tenant", "name": name})
        key = self.op.post("/api/v1/keys", {"tenant": name, "role": role})["key"]
        return Client(self.server.url, key)

    def nodes(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.op.get("/api/v1/nodes")["items"]
        return items


@dataclass
class Target:
    """A control plane on one executor, a tenant on it, and the flavor its nodes offer."""

    cloud: Cloud
    tenant: Client
    flavor: str
    chips_per_node: int


@contextmanager
def control_plane(
    home: Path, executor: str, ray_address: str | None = None, isolation: str = "auto"
) -> Iterator[Cloud]:
    settings = Settings.from_env(
        home=home,
        database_url=f"sqlite:///{home / 'rainier.db'}",
        port=0,
        tick_s=0.05,
        executor=executor,
        ray_address=ray_address,
        isolation=isolation,
    )
    with EmbeddedServer(settings) as server:
        op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
        yield Cloud(server, op, executor)


def wait_until(predicate: Callable[[], Any], timeout_s: float = DEADLINE_S, what: str = "") -> Any:
    """Polls `predicate` until it returns something truthy; fails at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.05)


def job_state(client: Client, job_id: str, *states: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}")
        return job if job["state"] in states else None

    return check


def tasks_running(client: Client, job_id: str, count: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}")
        running = [t for t in job["tasks"] if t["state"] == "running"]
        return job if len(running) >= count else None

    return check


WORDS = [
    "the",
    "a",
    "model",
    "learns",
    "tokens",
    "from",
    "text",
    "while",
    "gradients",
    "flow",
    "through",
    "layers",
    "of",
    "attention",
    "and",
    "every",
    "step",
    "moves",
    "weights",
    "toward",
    "lower",
    "loss",
    "so",
    "that",
    "later",
    "batches",
    "look",
    "familiar",
    "to",
    "it",
]


def write_corpus(root: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        lines = (
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))).capitalize() + "."
            for _ in range(200)
        )
        (root / f"notes-{i}.txt").write_text("\n".join(lines))
    return root


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return lines


def wait_for_job(client: Client, job_id: str, *states: str, timeout_s: float = DEADLINE_S) -> Any:
    """Like `wait_until(job_state(...))`, but a timeout says what the job was doing and logged."""
    try:
        return wait_until(job_state(client, job_id, *states), timeout_s=timeout_s)
    except AssertionError as exc:
        job = client.get(f"/api/v1/jobs/{job_id}")
        logs = client.get(f"/api/v1/jobs/{job_id}/logs")["data"]
        events = [e["message"] for e in job["events"]]
        raise AssertionError(
            f"{exc}\nstate {job['state']}: {job['reason']}\nevents: {events}\nlogs:\n{logs[-3000:]}"
        ) from None
