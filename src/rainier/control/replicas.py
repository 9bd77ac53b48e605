"""Applying and deleting Deployment documents, and what a deployment's replica runs.

A replica is an ordinary Job row (`kind="replica"`, `deployment_id` set) running
`python -m rainier.serve --model DIR --port 0`, so the scheduler places it as a one-node gang and
the executor starts, restarts and stops it like any task; `REVISION_ENV` in its environment
says which revision of the deployment it serves."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.control.registry import ResolvedModel, resolve_model
from rainier.control.scaling import scale_deployment
from rainier.control.stopping import request_stop
from rainier.control.stored import deployment_spec, job_spec
from rainier.engines.vllm_launch import replica_command as vllm_replica_command
from rainier.spec import DeploymentSpec, JobSpec, ServingEngine
from rainier.store.lifecycle import (
    LIVE_JOB_STATES,
)
from rainier.store.tables import (
    Deployment,
    Event,
    Job,
    ReplicaEndpoint,
    new_id,
    utcnow,
)

log = logging.getLogger("rainier.deployments")

SERVE_MODULE = "rainier.serve"
REPLICA_MAX_RESTARTS = 100
REPLICA_GRACE_S = 15.0
REVISION_ENV = "RAINIER_DEPLOYMENT_REVISION"
MODEL_ENV = "RAINIER_MODEL"


def _replica_fields(doc: DeploymentSpec, model: ResolvedModel) -> dict[str, object]:
    return {
        "model": model.ref,
        "path": model.path,
        "flavor": doc.flavor,
        "chips": doc.chips_per_replica,
        "priority": doc.priority,
        "max_batch_tokens": doc.max_batch_tokens,
        "engine": doc.engine,
        "dtype": doc.dtype,
    }


def apply_deployment(
    s: Session, tenant_id: str, doc: DeploymentSpec, owned: Callable[[str], str]
) -> tuple[Deployment, bool]:
    """Creates the deployment or updates the one of that name; True when created.

    Changes to what a replica runs bump the revision, and the controller rolls replicas over
    to it; changes to scaling and rate limits apply to the running replicas as they are.
    """
    model = resolve_model(s, tenant_id, doc.model, owned)
    spec = doc.model_dump(mode="json")
    row = s.scalars(
        select(Deployment).where(Deployment.tenant_id == tenant_id, Deployment.name == doc.name)
    ).one_or_none()
    now = utcnow()
    if row is None:
        row = Deployment(
            id=new_id("dep"),
            tenant_id=tenant_id,
            name=doc.name,
            spec=spec,
            model=model.ref,
            model_path=model.path,
            revision=1,
            desired_replicas=doc.replicas.min,
            scaled_at=now,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        s.flush()
        deployment_event(
            s, row, "created", f"serving {model.ref} with {doc.replicas.min} replica(s)"
        )
        return row, True
    before = deployment_spec(row)
    if _replica_fields(before, ResolvedModel(row.model, row.model_path)) != _replica_fields(
        doc, model
    ):
        row.revision += 1
        deployment_event(s, row, "updated", f"revision {row.revision}: serving {model.ref}")
    else:
        deployment_event(s, row, "updated", "scaling and limits updated")
    row.spec, row.model, row.model_path, row.updated_at = spec, model.ref, model.path, now
    desired = min(max(row.desired_replicas, doc.replicas.min), doc.replicas.max)
    scale_deployment(s, row, desired, f"replicas between {doc.replicas.min} and {doc.replicas.max}")
    return row, False


def stop_replica(s: Session, job: Job, reason: str) -> None:
    """Asks a replica to exit (SIGTERM, then SIGKILL after its grace period), as `stop` does."""
    if not request_stop(s, job, reason):
        return
    endpoint = s.get(ReplicaEndpoint, job.id)
    if endpoint is not None:
        s.delete(endpoint)


def delete_deployment(s: Session, row: Deployment) -> int:
    """Stops every replica and forgets the deployment; returns how many replicas were stopped.
    Token usage keeps the deployment's id and name, so what was served stays billable."""
    replicas = s.scalars(
        select(Job).where(Job.deployment_id == row.id, Job.state.in_(LIVE_JOB_STATES))
    ).all()
    for job in replicas:
        stop_replica(s, job, f"deployment {row.name} deleted")
    deployment_event(s, row, "deleted", f"deployment deleted; {len(replicas)} replica(s) stopping")
    s.delete(row)
    return len(replicas)


def replica_spec(row: Deployment, host: str = "127.0.0.1") -> JobSpec:
    """What a replica runs; `host` is the address it listens on (all of them when the gateway
    reaches it from another machine)."""
    doc = deployment_spec(row)
    threads = doc.chips_per_replica if doc.flavor == "cpu" else 0
    if doc.engine == ServingEngine.VLLM:
        command = vllm_replica_command(
            row.model_path, row.name, host, doc.max_batch_tokens, doc.dtype, threads
        )
    else:
        command = _rainier_replica_command(row, doc, host, threads)
    return JobSpec(
        name=replica_name(row.name),
        command=command,
        env={"RAINIER_DEPLOYMENT": row.name, REVISION_ENV: str(row.revision), MODEL_ENV: row.model},
        flavor=doc.flavor,
        nodes=1,
        chips_per_node=doc.chips_per_replica,
        priority=doc.priority,
        max_restarts=REPLICA_MAX_RESTARTS,
        grace_period_s=REPLICA_GRACE_S,
    )


def _rainier_replica_command(
    row: Deployment, doc: DeploymentSpec, host: str, threads: int
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        SERVE_MODULE,
        "--model",
        row.model_path,
        "--host",
        host,
        "--port",
        "0",
        "--served-model-name",
        row.name,
        "--max-batch-tokens",
        str(doc.max_batch_tokens),
    ]
    if doc.dtype != "auto":
        command += ["--dtype", doc.dtype]
    if threads > 0:
        command += ["--torch-threads", str(threads)]
    return command


def replica_name(deployment: str) -> str:
    return f"{deployment[:54].rstrip('-')}-{os.urandom(4).hex()}"


def revision_of(job: Job) -> int:
    try:
        return int(job_spec(job).env.get(REVISION_ENV, 0))
    except ValueError:
        return 0


def deployment_event(s: Session, row: Deployment, kind: str, message: str) -> None:
    """Records a deployment's change, and says it in the server's log: one line per change."""
    s.add(Event(object_id=row.id, tenant_id=row.tenant_id, kind=kind, message=message))
    log.info("deployment %s (%s) %s: %s", row.name, row.id, kind, message)
