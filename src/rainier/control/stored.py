"""Stored documents read back as the models they were validated as.

A job row keeps its spec as JSON beside the columns the control plane queries by (name,
flavor, gang shape, priority); those columns are the truth for what they hold, so they fill
the spec where a row written by other means left them out."""

from __future__ import annotations

from typing import Any

from rainier.spec import DeploymentSpec, JobSpec
from rainier.spec_stored import load_stored


def job_spec(job: Any) -> JobSpec:
    """`job` is a Job row, or a result row with its `spec` and the columns named above."""
    return load_stored(
        JobSpec,
        {
            **job.spec,
            "name": job.name,
            "flavor": job.flavor,
            "nodes": job.nodes,
            "chips_per_node": job.chips_per_node,
            "priority": job.priority,
        },
    )


def deployment_spec(row: Any) -> DeploymentSpec:
    return load_stored(DeploymentSpec, row.spec)
