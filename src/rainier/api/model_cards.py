"""What `/v1/models` says of a tenant's deployments.

OpenAI's four fields, and the two that vLLM's server adds and its tools read: `root`, the model
the name stands for (its folder; `vllm bench serve` without `--model` builds its tokenizer from
it) and `max_model_len`, the most prompt plus completion tokens a request may hold (the model's
`max_position_embeddings`). With them, tooling written for vLLM works against the gateway as it
is, whichever engine serves the deployment.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.store.tables import Deployment


def max_model_len(model_path: str) -> int | None:
    """The model's context length from its `config.json`, or None when it cannot be read here
    (a model the control plane cannot see)."""
    config = Path(model_path) / "config.json"
    try:
        mtime = os.stat(config).st_mtime_ns
    except OSError:
        return None
    return _context_length(str(config), mtime)


@functools.lru_cache(maxsize=1024)
def _context_length(config_path: str, _mtime_ns: int) -> int | None:
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    text = config.get("text_config")
    found = config.get("max_position_embeddings")
    if found is None and isinstance(text, dict):
        found = text.get("max_position_embeddings")
    return found if isinstance(found, int) and found > 0 else None


def model_card(dep: Deployment, owner: str) -> dict[str, Any]:
    return {
        "id": dep.name,
        "object": "model",
        "created": int(dep.created_at.timestamp()),
        "owned_by": owner,
        "root": dep.model_path,
        "parent": None,
        "max_model_len": max_model_len(dep.model_path),
    }


def model_cards(
    s: Session, tenant_id: str, owner: str, name: str | None = None
) -> list[dict[str, Any]]:
    """The tenant's deployments by name (only `name`'s when given)."""
    query = select(Deployment).where(Deployment.tenant_id == tenant_id)
    if name is not None:
        query = query.where(Deployment.name == name)
    return [model_card(d, owner) for d in s.scalars(query.order_by(Deployment.name))]
