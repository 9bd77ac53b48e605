"""What a model name routes to: the caller's deployment and its ready replicas, read from the
database and kept briefly, since every request asks."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from rainier.api.auth import Principal
from rainier.api.gateway_errors import GatewayError
from rainier.control.deployments import MODEL_ENV
from rainier.spec import DeploymentSpec
from rainier.store.db import Store
from rainier.store.tables import Deployment, Job, ReplicaEndpoint

# How long a deployment's settings and ready replicas are reused for later requests. Changes
# made through this process's API apply at once; the controller's (a replica turning ready or
# going away) within this time, and a replica gone meanwhile costs a retry, not an error.
TARGET_CACHE_S = 1.0


@dataclass(frozen=True)
class Endpoint:
    job_id: str
    url: str
    load: int
    model: str


@dataclass(frozen=True)
class DeploymentRoute:
    id: str
    name: str
    tenant_id: str
    model: str
    rate_limit_rpm: int | None
    desired_replicas: int
    created_s: int
    endpoints: tuple[Endpoint, ...]


class Targets:
    """The deployments this process routed to lately, by (tenant id, name)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[tuple[str, str], tuple[float, DeploymentRoute]] = {}

    def forget(self) -> None:
        """Drops the cached deployments (after one is applied or deleted)."""
        self._cache.clear()

    def load(self, tenant_id: str, name: str) -> DeploymentRoute | None:
        with self.store.read() as s:
            dep = s.scalars(
                select(Deployment).where(Deployment.tenant_id == tenant_id, Deployment.name == name)
            ).one_or_none()
            if dep is None:
                return None
            endpoints = s.execute(
                select(ReplicaEndpoint, Job.spec)
                .join(Job, Job.id == ReplicaEndpoint.job_id)
                .where(ReplicaEndpoint.deployment_id == dep.id, ReplicaEndpoint.ready.is_(True))
            ).all()
            doc = DeploymentSpec.model_validate(dep.spec)
            return DeploymentRoute(
                id=dep.id,
                name=dep.name,
                tenant_id=dep.tenant_id,
                model=dep.model,
                rate_limit_rpm=doc.rate_limit_rpm,
                desired_replicas=dep.desired_replicas,
                created_s=int(dep.created_at.timestamp()),
                endpoints=tuple(
                    Endpoint(
                        e.job_id,
                        e.url,
                        e.running + e.waiting,
                        str(spec.get("env", {}).get(MODEL_ENV) or dep.model),
                    )
                    for e, spec in endpoints
                ),
            )

    async def target(self, caller: Principal, name: str, fresh: bool = False) -> DeploymentRoute:
        """The caller's deployment `name`, from the cache unless it is older than
        `TARGET_CACHE_S` or `fresh` is asked for; a name the tenant has no deployment of is
        "not found", another tenant's included."""
        key = (caller.tenant_id or "", name)
        now = time.monotonic()
        hit = None if fresh else self._cache.get(key)
        if hit is not None and now - hit[0] < TARGET_CACHE_S:
            return hit[1]
        found = await run_in_threadpool(self.load, *key)
        if found is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, found)
        else:
            self._cache.pop(key, None)
        if found is None:
            raise GatewayError(
                404,
                f"The model `{name}` does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return found
