"""The one way a deployment's replica count changes: the autoscaler's decisions, a request
waking a deployment scaled to zero, and an applied document's new bounds all go through here,
so each change is recorded the same way (an event, `scaled_at`)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from rainier.store.tables import Deployment, Event, utcnow

log = logging.getLogger("rainier.deployments")


def scale_deployment(s: Session, dep: Deployment, replicas: int, why: str) -> bool:
    """Sets the desired replica count; False when it already was `replicas`."""
    if replicas == dep.desired_replicas:
        return False
    word = "up" if replicas > dep.desired_replicas else "down"
    message = f"{dep.desired_replicas} -> {replicas} replicas ({why})"
    s.add(Event(object_id=dep.id, tenant_id=dep.tenant_id, kind=f"scaled-{word}", message=message))
    log.info("deployment %s (%s) scaled-%s: %s", dep.name, dep.id, word, message)
    dep.desired_replicas, dep.scaled_at = replicas, utcnow()
    return True


def wake_from_zero(s: Session, dep: Deployment) -> bool:
    """A request arrived for a deployment scaled to zero: one replica, at once; the autoscaler
    takes over from there. False when the deployment was not at zero."""
    if dep.desired_replicas != 0:
        return False
    return scale_deployment(s, dep, 1, "a request arrived")
