"""The /v1 gateway with the official `openai` client against real replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rainier.cli.client import Client

from .conftest import Cloud, wait_until, written


def usage_of(client: Client, deployment: str, cloud: Cloud) -> dict[str, dict[str, Any]]:
    """The deployment's metered requests, once the gateway has written what it metered."""
    written(cloud)
    items = client.get(f"/api/v1/deployments/{deployment}/usage", limit=10000)["items"]
    return {u["request_id"]: u for u in items}


def test_completion_plain_is_answered_and_metered_once(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    oai = cloud.openai(acme)
    raw = oai.completions.with_raw_response.create(
        model="chat", prompt="the compute cloud", max_tokens=5, temperature=0
    )
    completion = raw.parse()
    assert completion.model == "chat"
    assert completion.choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens >= 1
    request_id = raw.headers["x-request-id"]
    record = usage_of(acme, "chat", cloud)[request_id]
    assert record["input_tokens"] == completion.usage.prompt_tokens
    assert record["output_tokens"] == completion.usage.completion_tokens
    assert record["model"] == "tiny:1"


def test_stream_without_usage_hides_the_usage_chunk_but_meters_it(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    oai = cloud.openai(acme)
    raw = oai.completions.with_raw_response.create(
        model="chat", prompt="a river", max_tokens=6, temperature=0, stream=True
    )
    chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text
    record = usage_of(acme, "chat", cloud)[raw.headers["x-request-id"]]
    assert 1 <= record["output_tokens"] <= 6 and record["input_tokens"] >= 2


def test_chat_stream_with_usage_matches_the_record(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    oai = cloud.openai(acme)
    raw = oai.chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "user", "content": "hello world"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert sum(c.usage is not None for c in chunks) == 1
    record = usage_of(acme, "chat", cloud)[raw.headers["x-request-id"]]
    assert record["input_tokens"] == last.usage.prompt_tokens
    assert record["output_tokens"] == last.usage.completion_tokens


def test_chat_completion(cloud: Cloud, acme: Client, chat: dict[str, Any]) -> None:
    answer = cloud.openai(acme).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "the snow"}], max_tokens=3
    )
    assert answer.model == "chat"
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage is not None and answer.usage.completion_tokens <= 3


def test_models_are_the_tenants_deployments(
    cloud: Cloud, acme: Client, globex: Client, chat: dict[str, Any]
) -> None:
    assert [m.id for m in cloud.openai(acme).models.list()] == ["chat"]
    assert cloud.openai(acme).models.retrieve("chat").owned_by == "acme"
    assert list(cloud.openai(globex).models.list()) == []


def test_other_tenants_model_is_not_found(
    cloud: Cloud, acme: Client, globex: Client, chat: dict[str, Any]
) -> None:
    before = len(usage_of(acme, "chat", cloud))
    with pytest.raises(openai.NotFoundError) as caught:
        cloud.openai(globex).completions.create(model="chat", prompt="x", max_tokens=2)
    assert caught.value.code == "model_not_found"
    response = httpx.post(
        f"{cloud.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {globex.key}"},
        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    with pytest.raises(openai.NotFoundError):
        cloud.openai(acme).completions.create(model="nope", prompt="x", max_tokens=2)
    assert len(usage_of(acme, "chat", cloud)) == before


def test_bad_key_is_401(cloud: Cloud, chat: dict[str, Any]) -> None:
    bad = openai.OpenAI(base_url=f"{cloud.url}/v1", api_key="rk_not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.completions.create(model="chat", prompt="x", max_tokens=2)
    assert caught.value.code == "invalid_api_key"
    response = httpx.get(f"{cloud.url}/v1/models")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    operator = {"Authorization": f"Bearer {cloud.op.key}"}
    assert httpx.get(f"{cloud.url}/v1/models", headers=operator).status_code == 401


def test_rate_limit_is_429_and_applies_without_new_replicas(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    before = acme.get("/api/v1/deployments/chat")
    spec = {k: v for k, v in before["spec"].items() if k != "tenant"}
    updated = acme.http.post("/api/v1/deployments", json={**spec, "rate_limit_rpm": 2})
    assert updated.status_code == 200 and updated.json()["revision"] == before["revision"]
    oai = cloud.openai(acme, max_retries=0)
    records = len(usage_of(acme, "chat", cloud))
    try:
        for _ in range(2):
            oai.completions.create(model="chat", prompt="one", max_tokens=1)
        with pytest.raises(openai.RateLimitError) as caught:
            oai.completions.create(model="chat", prompt="one", max_tokens=1)
        assert caught.value.code == "rate_limit_exceeded"
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert set(caught.value.response.json()["error"]) == {"message", "type", "param", "code"}
    finally:
        acme.post("/api/v1/deployments", {**spec, "rate_limit_rpm": None})
    oai.completions.create(model="chat", prompt="one", max_tokens=1)
    assert len(usage_of(acme, "chat", cloud)) == records + 3
    after = acme.get("/api/v1/deployments/chat")
    assert {r["id"] for r in after["replica_list"]} == {r["id"] for r in before["replica_list"]}


def test_every_answered_request_is_metered_exactly_once(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    oai = cloud.openai(acme)
    ids = []
    for stream in (False, True, False, True):
        raw = oai.completions.with_raw_response.create(
            model="chat", prompt="tenant contract", max_tokens=2, stream=stream
        )
        if stream:
            list(raw.parse())
        ids.append(raw.headers["x-request-id"])
    records = list(usage_of(acme, "chat", cloud).values())
    mine = [r for r in records if r["request_id"] in ids]
    assert sorted(r["request_id"] for r in mine) == sorted(ids)
    assert len({r["request_id"] for r in records}) == len(records)
    assert all(r["input_tokens"] > 0 and 1 <= r["output_tokens"] <= 2 for r in mine)


def test_replicas_are_jobs_running_the_serving_runtime(
    acme: Client, chat: dict[str, Any], model_dir: Path
) -> None:
    replicas = acme.get("/api/v1/jobs", kind="replica", state=["running"])["items"]
    assert replicas
    for job in replicas:
        command = job["spec"]["command"]
        assert command[1:5] == ["-m", "rainier.serve", "--model", str(model_dir)]
        flags = dict(zip(command[5::2], command[6::2], strict=False))
        assert flags["--port"] == "0" and flags["--served-model-name"] == "chat"
        assert job["spec"]["max_restarts"] >= 10 and job["priority"] == 50


def test_client_gone_mid_stream_aborts_the_replicas_request(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    gateway = cloud.server.app.state.gateway
    body = {
        "model": "chat",
        "prompt": "a long answer",
        "max_tokens": 200,
        "ignore_eos": True,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {acme.key}"}
    replicas = [r["url"] for r in acme.get("/api/v1/deployments/chat")["replica_list"] if r["url"]]

    def aborted() -> float:
        name = 'rainier_serve_requests_finished_total{finish_reason="abort"}'
        total = 0.0
        for url in replicas:
            for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
                if line.startswith(name + " "):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    before = aborted()
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{cloud.url}/v1/completions", json=body, headers=headers) as stream,
    ):
        lines = stream.iter_lines()
        first = [line for _, line in zip(range(3), lines, strict=False)]
    assert any(line.startswith("data: {") for line in first)

    def dropped() -> bool:
        loads = [httpx.get(url + "/load", timeout=5).json() for url in replicas]
        idle = not gateway.inflight and all(load["running"] == 0 for load in loads)
        return idle and aborted() > before

    wait_until(dropped, 30, "the replica to abort the abandoned stream")
