"""How busy a replica is, whichever engine it runs.

rainier's replicas answer `/health` with `{"running": N, "waiting": M}`; vLLM's answer it with
an empty 200 and publish the same two numbers on `/metrics` as `vllm:num_requests_running` and
`vllm:num_requests_waiting` (one series per served model, summed here). rainier's replicas
publish those names too, so either source reads the same.
"""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"


def load_from_metrics(text: str) -> tuple[int, int]:
    """(running, waiting) from a Prometheus exposition; a family that is absent counts 0."""
    totals = {RUNNING: 0.0, WAITING: 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return int(totals[RUNNING]), int(totals[WAITING])


def load_from_health(body: Any) -> tuple[int, int] | None:
    """(running, waiting) when a `/health` body carries them, else None."""
    if isinstance(body, dict) and "running" in body:
        return int(body["running"]), int(body.get("waiting", 0))
    return None


def replica_load(http: httpx.Client, url: str, health: httpx.Response) -> tuple[int, int]:
    """The load of a replica whose `/health` just answered 200: from that answer when it says,
    else from the replica's `/metrics`. Raises httpx.HTTPError or ValueError when neither does."""
    try:
        found = load_from_health(health.json()) if health.content else None
    except ValueError:
        found = None
    if found is not None:
        return found
    metrics = http.get(f"{url}/metrics")
    metrics.raise_for_status()
    return load_from_metrics(metrics.text)
