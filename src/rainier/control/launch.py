"""What one task of a job is started with: command, environment, chips, folders and sandbox.

The reconciler persists a placement (nodes, and which chips of each) before it asks an executor
to start anything; this turns that placement and the job's spec into a `TaskLaunch`.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Any

from rainier.catalog import FLAVORS
from rainier.config import Settings
from rainier.control.executor import Executor, TaskLaunch
from rainier.control.rendezvous import BY_CONTROL_PLANE, RENDEZVOUS_ENV
from rainier.control.uids import TenantUids, parse_range
from rainier.spec import TrainSpec
from rainier.storage.location import is_url
from rainier.store.db import Store
from rainier.store.keys import JobTokens
from rainier.store.tables import Job, Task

GIB = 1024**3


class Launches:
    def __init__(self, store: Store, executor: Executor, settings: Settings, tokens: JobTokens):
        self.store = store
        self.tokens = tokens
        self.executor = executor
        self.settings = settings
        self.uids = TenantUids(store, parse_range(settings.sandbox_uids))

    def _storage(self, tenant: str) -> Path:
        return self.settings.storage_dir / (tenant or "-")

    def _storage_folder(self, tenant: str) -> tuple[str, ...]:
        """Storage named by a `file://` URL is a folder every node mounts: a task writes its
        checkpoints and exports into its tenant's prefix there itself."""
        store = self.settings.storage_config
        if not store.explicit or store.scheme != "file":
            return ()
        return (store.tenant_url(tenant).removeprefix("file://"),)

    def _inputs(
        self, spec: dict[str, Any], command: list[str], tenant: str, *, replica: bool
    ) -> list[str]:
        """Of the control plane's own folders only checkpoints (and models exported there) and
        the tenant's own storage prefix may be a task's input; the database, logs, task
        records and other tenants' storage never."""
        home = self.settings.home
        allowed = (self.settings.checkpoints_dir, self._storage(tenant))
        paths = inputs_of(spec, command, replica=replica)
        return [p for p in paths if not _under(p, home) or any(_under(p, r) for r in allowed)]

    def launch_of(self, job: Job, task: Task, tenant: str) -> TaskLaunch:
        placement = job.placement or {}
        nodes: list[str] = placement.get("nodes", [])
        spec = job.spec
        ckpt = self.settings.checkpoints_dir / job.id
        workdir = self.settings.work_dir / job.id / f"rank-{task.rank}"
        chip_ids = chips_of(placement, task.rank)
        flavor = FLAVORS.get(job.flavor)
        env = {
            **{k: str(v) for k, v in spec.get("env", {}).items()},
            "RAINIER_JOB_ID": job.id,
            "RAINIER_JOB_NAME": job.name,
            "RAINIER_TENANT": tenant,
            "RAINIER_RANK": str(task.rank),
            "RAINIER_WORLD_SIZE": str(job.nodes),
            "RAINIER_NODE": task.node,
            "RAINIER_FLAVOR": job.flavor,
            "RAINIER_CHIPS": str(task.chips),
            "RAINIER_CHIP_IDS": ",".join(map(str, chip_ids)),
            "RAINIER_ATTEMPT": str(job.attempt),
            "RAINIER_CHECKPOINT_DIR": str(ckpt),
            "RAINIER_WORKDIR": str(workdir),
            "RAINIER_CONTROL_URL": self.settings.control_url,
            "RAINIER_TOKEN": self.tokens.sign(job.id),
            "RANK": str(task.rank),
            "WORLD_SIZE": str(job.nodes),
            "LOCAL_RANK": "0",
            "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": self.executor.node_address(nodes[0]) if nodes else "127.0.0.1",
            # the node that starts the task settles MASTER_ADDR/MASTER_PORT (`rendezvous`)
            RENDEZVOUS_ENV: BY_CONTROL_PLANE,
            "RAINIER_NODE_ADDRESS": self.executor.node_address(task.node),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.settings.storage_config.task_env(tenant, job.id))
        if "master_port" in placement:  # placed before nodes chose their ports
            env["MASTER_PORT"] = str(placement["master_port"])
            del env[RENDEZVOUS_ENV]
        if flavor is not None:
            env["RAINIER_FLAVOR_PEAK_TFLOPS"] = repr(flavor.peak_tflops)
        device_env = flavor.device_env if flavor else None
        if flavor and device_env != "cpu" and chip_ids:
            env[flavor.device_env] = ",".join(map(str, flavor.device_ids(chip_ids)))
        command = command_of(spec, job, ckpt)
        read_write = (str(ckpt), str(workdir), *self._storage_folder(tenant))
        memory_gb = spec.get("memory_gb") or (
            (flavor.task_memory_gb_per_chip if flavor else 16.0) * max(1, task.chips)
        )
        return TaskLaunch(
            task_id=task.id,
            job_id=job.id,
            node=task.node,
            command=command,
            env=env,
            log_path=self.settings.logs_dir / job.id / f"rank-{task.rank}.log",
            chips=task.chips,
            flavor=job.flavor,
            rank=task.rank,
            attempt=job.attempt,
            gang_nodes=tuple(nodes),
            chip_ids=chip_ids,
            device_env=device_env,
            uid=self.uids.uid_of(job.tenant_id),
            workdir=str(workdir),
            read_write=read_write,
            read_only=tuple(self._inputs(spec, command, tenant, replica=job.kind == "replica")),
            hidden=(str(self.settings.home),),
            input_roots=(str(self.settings.checkpoints_dir), str(self._storage(tenant))),
            memory_bytes=int(float(memory_gb) * GIB),
        )


def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root).rstrip("/") + "/")


def chips_of(placement: dict[str, Any], rank: int) -> tuple[int, ...]:
    chips = placement.get("chips") or []
    return tuple(int(c) for c in chips[rank]) if rank < len(chips) else ()


def command_of(spec: dict[str, Any], job: Job, checkpoints: Path) -> list[str]:
    """A job's command line; a `train:` job runs rainier's runtime with the control plane's
    own interpreter (nodes run rainier from the same installation) and exports beside its
    checkpoints, where a restarted attempt finds them too."""
    if spec.get("command"):
        return list(spec["command"])
    train = TrainSpec.model_validate(spec["train"])
    return train.command(sys.executable, job.name, job.nodes, str(checkpoints / "export"))


def inputs_of(spec: dict[str, Any], command: list[str], *, replica: bool) -> list[str]:
    """What a task may read besides the runtime: a training job's data, a replica's model.
    The node binds each only where the tenant's user may read it anyway."""
    paths: list[str] = []
    for pattern in (spec.get("train") or {}).get("data", []):
        if is_url(pattern):
            continue
        base = pattern
        if glob.has_magic(pattern):
            base = os.path.dirname(pattern.split("*")[0].split("?")[0].split("[")[0]) or "/"
        paths.append(os.path.abspath(base))
    if replica and "--model" in command[:-1]:
        model = command[command.index("--model") + 1]
        if not is_url(model):
            paths.append(os.path.abspath(model))
    return [p for p in paths if p != "/"]
