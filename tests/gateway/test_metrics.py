"""The control plane's /metrics, scraped with prometheus_client's parser while jobs run and
requests flow: the values move as the cluster does."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rainier.cli.client import Client

from .conftest import Cloud, wait_until

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def scrape(cloud: Cloud) -> Samples:
    out: Samples = {}
    text = httpx.get(f"{cloud.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def state_is(client: Client, job_id: str, state: str) -> Callable[[], bool]:
    return lambda: client.get(f"/api/v1/jobs/{job_id}")["state"] == state


def test_metrics_move_with_jobs_and_requests(
    cloud: Cloud, acme: Client, chat: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rainier")
    cpu = {"tenant": "acme", "flavor": "cpu"}
    before = scrape(cloud)
    assert value(before, "rainier_cluster_chips", flavor="cpu") == 4

    # a job of 2 chips runs beside the replica; one of 3 cannot, and waits
    runner = acme.post(
        "/api/v1/jobs",
        {"kind": "Job", "name": "runner", "chips_per_node": 2, "command": SLEEP},
        idempotent=True,
    )
    wait_until(state_is(acme, runner["id"], "running"), 60, "the runner to start")
    waiter = acme.post(
        "/api/v1/jobs",
        {"kind": "Job", "name": "waiter", "chips_per_node": 3, "command": SLEEP},
        idempotent=True,
    )
    during = scrape(cloud)
    assert value(during, "rainier_chips_in_use", **cpu) >= 3  # the replica's chip and the runner's
    assert value(during, "rainier_chips_borrowed", **cpu) == value(
        during, "rainier_chips_in_use", **cpu
    )  # acme has no contract here: every chip it holds is borrowed
    assert value(during, "rainier_queue_length", **cpu) == 1
    first_wait = value(during, "rainier_queue_oldest_wait_seconds", **cpu)
    wait_until(
        lambda: value(scrape(cloud), "rainier_queue_oldest_wait_seconds", **cpu) > first_wait + 0.5,
        30,
        "the queue's wait to grow",
    )
    assert value(during, "rainier_jobs", state="pending") >= 1

    # requests through the gateway, one of them to a deployment that does not exist
    client = cloud.openai(acme)
    prompt = completion = 0
    for i in range(3):
        answer = client.completions.create(
            model="chat", prompt=f"count {i}", max_tokens=3, temperature=0
        )
        assert answer.usage is not None
        prompt += answer.usage.prompt_tokens
        completion += answer.usage.completion_tokens
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    after = scrape(cloud)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    chat_replicas = {"tenant": "acme", "deployment": "chat"}
    assert value(after, "rainier_deployment_replicas", **chat_replicas, state="ready") >= 1
    assert value(after, "rainier_deployment_replicas", **chat_replicas, state="desired") >= 1
    assert grew("rainier_gateway_requests_total", tenant="acme", deployment="chat", code="200") == 3
    assert (
        grew("rainier_gateway_request_duration_seconds_count", tenant="acme", deployment="chat")
        == 3
    )
    assert (
        grew("rainier_gateway_request_duration_seconds_sum", tenant="acme", deployment="chat") > 0
    )
    assert (
        grew("rainier_gateway_tokens_total", tenant="acme", deployment="chat", kind="prompt")
        == prompt
    )
    assert (
        grew("rainier_gateway_tokens_total", tenant="acme", deployment="chat", kind="completion")
        == completion
    )
    missing = {"tenant": "acme", "deployment": "no-such-model", "type": "invalid_request_error"}
    assert grew("rainier_gateway_errors_total", **missing) == 1
    assert (
        grew(
            "rainier_gateway_requests_total", tenant="acme", deployment="no-such-model", code="404"
        )
        == 1
    )

    # the runner stops: the waiter is admitted, and its wait is observed
    acme.post(f"/api/v1/jobs/{runner['id']}/stop")
    wait_until(state_is(acme, waiter["id"], "running"), 60, "the waiter to start")
    admitted = scrape(cloud)
    waits = value(admitted, "rainier_queue_wait_seconds_count", **cpu) - value(
        before, "rainier_queue_wait_seconds_count", **cpu
    )
    assert waits == 2  # the runner (at once) and the waiter (after the runner)
    waited = value(admitted, "rainier_queue_wait_seconds_sum", **cpu) - value(
        before, "rainier_queue_wait_seconds_sum", **cpu
    )
    assert waited >= first_wait + 0.5
    assert value(admitted, "rainier_queue_length", **cpu) == 0
    acme.post(f"/api/v1/jobs/{waiter['id']}/stop")
    wait_until(state_is(acme, waiter["id"], "stopped"), 60, "the waiter to stop")
    final = scrape(cloud)
    stopped = {**cpu, "outcome": "stopped"}
    assert (
        value(final, "rainier_jobs_finished_total", **stopped)
        - value(before, "rainier_jobs_finished_total", **stopped)
        == 2
    )

    # the server's log said each change of the two jobs, once
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("rainier")]
    for job_id in (runner["id"], waiter["id"]):
        assert sum(line.startswith(f"job {job_id} admitted") for line in lines) == 1
        assert sum(line.startswith(f"job {job_id} stopped") for line in lines) == 1
    assert not any("HTTP Request" in line for line in lines)


def test_dashboard_charts_only_metrics_that_exist(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    """Every series the Grafana dashboard asks for is one the control plane or a replica
    exposes (the replicas' under vLLM's names)."""
    dashboard = json.loads(
        (Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text()
    )
    wanted = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:rainier_|vllm:)[a-z0-9_:]+)", target["expr"])
    }
    # one failed request and one finished job, so that every family has a series
    with pytest.raises(openai.NotFoundError):
        cloud.openai(acme).completions.create(model="no-such-model", prompt="x", max_tokens=1)
    done = acme.post("/api/v1/jobs", {"kind": "Job", "name": "once", "command": ["true"]})
    wait_until(state_is(acme, done["id"], "succeeded"), 60, "the job to finish")
    exposed = set(scrape(cloud))
    replica = next(r for r in acme.get("/api/v1/deployments/chat")["replica_list"] if r["url"])
    text = httpx.get(f"{replica['url']}/metrics", timeout=30).text
    exposed |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert wanted and wanted <= exposed, wanted - exposed


def test_a_deployment_says_what_the_gateway_measured(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    """The figures are the tenant's own series: another tenant's deployment of the same name
    would be another label set."""
    before = acme.get("/api/v1/deployments/chat")["gateway"]
    client = cloud.openai(acme)
    client.completions.create(model="chat", prompt="count", max_tokens=2, temperature=0)
    after = acme.get("/api/v1/deployments/chat")["gateway"]
    assert after["requests"] == before["requests"] + 1
    assert after["mean_latency_s"] is not None and after["mean_latency_s"] > 0
