"""Deployments: apply a document, delete one, wake one scaled to zero.

Scaling itself is `rainier.control.scaling`, shared with the deployment controller: a request
waking a deployment changes its replica count exactly as the autoscaler would."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from rainier.control.deployments import (
    ModelRefError,
    apply_deployment,
    delete_deployment,
)
from rainier.control.scaling import wake_from_zero as _wake
from rainier.spec import DeploymentSpec
from rainier.store.db import Store
from rainier.store.tables import Deployment

from .errors import Refused


def apply(
    s: Session, tenant_id: str, doc: DeploymentSpec, owned: Callable[[str], str]
) -> tuple[Deployment, bool]:
    """Creates or updates the tenant's deployment of that name; True when created. `owned`
    answers a model folder's resolved path if the tenant owns it, else raises ModelRefError."""
    try:
        return apply_deployment(s, tenant_id, doc, owned)
    except ModelRefError as exc:
        raise Refused(422, str(exc), field="model") from None


def delete(s: Session, row: Deployment) -> int:
    """Stops the deployment's replicas and forgets it; how many replicas were stopping."""
    return delete_deployment(s, row)


def wake_from_zero(store: Store, deployment_id: str) -> bool:
    """A request arrived for a deployment with no replica wanted: wants one now. True once the
    deployment wants at least one (whoever asked first)."""
    with store.write() as s:
        dep = s.get(Deployment, deployment_id)
        if dep is None:
            return False
        _wake(s, dep)
        return dep.desired_replicas > 0
