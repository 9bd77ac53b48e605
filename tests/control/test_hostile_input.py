"""Bad input as a hostile tenant sends it: every case is answered with a 4xx naming what is
wrong, never a server error, and nothing is written."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rainier.cli.client import Client
from rainier.serve.tiny_model import build_tiny_llama
from rainier.spec import SpecError, validate_document

from .conftest import Cloud, job_state, wait_until

CONTRACT = {
    "kind": "Contract",
    "name": "alpha-2026",
    "tenant": "alpha",
    "term": {"start": "2026-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
    "committed_usd": "1000",
    "backdate": True,
}


@pytest.fixture
def alpha(cloud: Cloud) -> Client:
    cloud.nodes({"name": "c1", "flavor": "cpu", "chips": 2})
    client = cloud.tenant("alpha")
    cloud.op.post("/api/v1/contracts", CONTRACT)
    return client


def post_raw(client: Client, path: str, body: bytes | str) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return client.http.post(path, content=data, headers={"content-type": "application/json"})


def field_of(response: httpx.Response) -> str:
    return str(response.json()["problems"][0]["field"])


def openai_error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_gateway_bodies_that_crashed_it(alpha: Client) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/v1/chat/completions", "/v1/completions"):
        response = post_raw(alpha, path, '{"model": "m", "x": ' + deep + "}")
        assert response.status_code == 400, response.text
        assert "nests deeper" in openai_error(response)["message"]
    nested = "[" * 500 + '"hi"' + "]" * 500
    response = post_raw(alpha, "/v1/completions", '{"model": "m", "prompt": ' + nested + "}")
    assert response.status_code == 400 and "nests deeper" in openai_error(response)["message"]
    nested = "[" * 5 + '"hi"' + "]" * 5
    response = post_raw(alpha, "/v1/completions", '{"model": "m", "prompt": ' + nested + "}")
    assert response.status_code == 400 and openai_error(response)["param"] == "prompt"
    for messages in (5, "hi", [5], [{"role": "user", "content": 5}], []):
        body = json.dumps({"model": "m", "messages": messages})
        response = post_raw(alpha, "/v1/chat/completions", body)
        assert response.status_code == 400, (messages, response.text)
        assert openai_error(response)["param"] == "messages"
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = '{"model": "m", "prompt": "x", "temperature": ' + literal + "}"
        assert post_raw(alpha, "/v1/completions", body).status_code == 400
    body = json.dumps({"model": "m", "prompt": "x", "max_tokens": "lots"})
    response = post_raw(alpha, "/v1/completions", body)
    assert response.status_code == 400 and openai_error(response)["param"] == "max_tokens"
    # a well-formed request for a model the tenant does not have is still "not found"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    response = post_raw(alpha, "/v1/chat/completions", body)
    assert response.status_code == 404 and openai_error(response)["code"] == "model_not_found"


def test_rest_bodies_nested_too_deep_are_refused(alpha: Client) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = post_raw(alpha, "/api/v1/jobs", '{"kind": "Job", "name": "x", "env": ' + deep + "}")
    assert 400 <= response.status_code < 500 and "message" in response.json()
    assert alpha.get("/api/v1/jobs")["items"] == []


def test_out_of_range_numbers_in_queries_and_bodies(cloud: Cloud, alpha: Client) -> None:
    job = alpha.post("/api/v1/jobs", {"kind": "Job", "name": "j", "command": ["true"]})
    wait_until(job_state(alpha, job["id"], "succeeded", "failed"), what="the job to end")
    metrics = alpha.http.post(
        f"/api/v1/jobs/{job['id']}/metrics", json={"step": 10**30, "metrics": {}}
    )
    assert metrics.status_code == 422 and field_of(metrics) == "step"
    past_column = {"step": 2**31, "metrics": {}}
    metrics = alpha.http.post(f"/api/v1/jobs/{job['id']}/metrics", json=past_column)
    assert metrics.status_code == 422 and field_of(metrics) == "step"
    nan = post_raw(
        alpha, f"/api/v1/jobs/{job['id']}/metrics", '{"step": 1, "metrics": {"loss": NaN}}'
    )
    assert nan.status_code == 422 and field_of(nan) == "metrics.loss"
    assert alpha.get(f"/api/v1/jobs/{job['id']}/metrics") == []
    logs = alpha.http.get(f"/api/v1/jobs/{job['id']}/logs", params={"offset": 10**20})
    assert logs.status_code == 422 and field_of(logs) == "offset"
    for since in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        usage = alpha.http.get("/api/v1/usage", params={"since": since})
        assert usage.status_code == 422 and field_of(usage) == "since", since
    folder = build_tiny_llama(cloud.settings.storage_dir / "alpha" / "m")
    deployment = {"kind": "Deployment", "name": "d", "model": str(folder)}
    deployment["replicas"] = {"min": 0, "max": 1}
    alpha.post("/api/v1/deployments", deployment)
    cursor = alpha.http.get("/api/v1/deployments/d/usage", params={"cursor": 10**20})
    assert cursor.status_code == 422 and field_of(cursor) == "cursor"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/api/v1/jobs",
            {"kind": "Job", "name": "t", "train": {"data": ["/d"], "tokens": 10**29}},
            "train.tokens",
        ),
        (
            "/api/v1/jobs",
            {"kind": "Job", "name": "t", "train": {"data": ["/d"], "steps": 10, "seed": 10**29}},
            "train.seed",
        ),
        (
            "/api/v1/jobs",
            {"kind": "Job", "name": "t", "command": ["x"], "max_duration_s": 1e300},
            "max_duration_s",
        ),
        ("/api/v1/jobs", {"kind": "Job", "name": "t", "command": ["x" * 70_000]}, "command"),
        (
            "/api/v1/jobs",
            {"kind": "Job", "name": "t", "command": ["x"], "env": {"A": "x" * 70_000}},
            "env",
        ),
        (
            "/api/v1/deployments",
            {"kind": "Deployment", "name": "d", "model": "m", "max_batch_tokens": 10**29},
            "max_batch_tokens",
        ),
        (
            "/api/v1/deployments",
            {
                "kind": "Deployment",
                "name": "d",
                "model": "m",
                "target_inflight_per_replica": 10**29,
            },
            "target_inflight_per_replica",
        ),
        (
            "/api/v1/deployments",
            {"kind": "Deployment", "name": "d", "model": "m", "rate_limit_rpm": 10**29},
            "rate_limit_rpm",
        ),
        ("/api/v1/keys", {"role": "member", "name": "k" * 10_000}, "name"),
    ],
)
def test_unbounded_values_are_refused(
    alpha: Client, path: str, body: dict[str, Any], field: str
) -> None:
    response = alpha.http.post(path, json=body)
    assert response.status_code == 422, response.text
    assert field_of(response) == field


def test_operator_documents_with_unbounded_values(cloud: Cloud, alpha: Client) -> None:
    op = cloud.op
    for body, field in [
        ('{**C, "weight": Infinity}', "weight"),
        ('{**C, "weight": 1e309}', "weight"),
        ('{**C, "committed_usd": 1e30}', "committed_usd"),
        ('{**C, "guaranteed_chips": {"cpu": 10000000000000000000}}', "guaranteed_chips.cpu"),
        ('{**C, "borrow_limit_chips": {"cpu": 9223372036854775808}}', "borrow_limit_chips.cpu"),
    ]:
        text = json.dumps({**CONTRACT, "name": "x-1"})[:-1] + ", " + body[5:-1] + "}"
        response = post_raw(op, "/api/v1/contracts", text)
        assert response.status_code == 422, (body, response.text)
        assert field_of(response) == field
    node = {"kind": "Node", "name": "n", "flavor": "cpu", "chips": 1, "labels": {"zone": "z" * 64}}
    response = op.http.post("/api/v1/nodes", json=node)
    assert response.status_code == 422 and field_of(response) == "labels.zone"
    tenant = op.http.post(
        "/api/v1/tenants", json={"kind": "Tenant", "name": "t", "display_name": "d" * 201}
    )
    assert tenant.status_code == 422 and field_of(tenant) == "display_name"
    assert [c["name"] for c in op.get("/api/v1/contracts")["items"]] == ["alpha-2026"]


def _chunks(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        yield b" " * 65536
        sent += 65536


def test_bodies_over_the_size_limit_are_refused(alpha: Client) -> None:
    big = {"kind": "Job", "name": "big", "command": ["true"], "pad": "x" * (10 << 20)}
    response = alpha.http.post("/api/v1/jobs", json=big)
    assert response.status_code == 413 and "larger than" in response.json()["message"]
    chunked = alpha.http.post(
        "/api/v1/jobs", content=_chunks(2 << 20), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    gateway = alpha.http.post("/v1/chat/completions", json={"model": "m", "pad": "x" * (9 << 20)})
    assert gateway.status_code == 413 and openai_error(gateway)["code"] == "request_too_large"
    assert alpha.get("/api/v1/jobs")["items"] == []


def test_events_of_objects_one_may_not_see_are_not_found(cloud: Cloud, alpha: Client) -> None:
    beta = cloud.tenant("beta")
    job = alpha.post(
        "/api/v1/jobs", {"kind": "Job", "name": "j", "command": [sys.executable, "-c", "1"]}
    )
    wait_until(job_state(alpha, job["id"], "succeeded"), what="the job to end")
    for ref in ("alpha-2026", job["id"], "nosuch-2026", "job-nosuch"):
        response = beta.http.get("/api/v1/events", params={"object": ref})
        assert response.status_code == 404, ref
        assert response.json() == {"message": f"object {ref!r} not found"}
    assert alpha.get("/api/v1/events", object=job["id"])["items"]
    assert alpha.http.get("/api/v1/events", params={"object": "alpha-2026"}).status_code == 200


def test_methods_and_unknown_paths(alpha: Client) -> None:
    options = alpha.http.options("/api/v1/jobs")
    assert options.status_code == 204
    assert {"GET", "POST", "OPTIONS"} <= set(options.headers["allow"].split(", "))
    put = alpha.http.put("/api/v1/jobs", json={})
    assert put.status_code == 405 and {"GET", "POST"} <= set(put.headers["allow"].split(", "))
    assert alpha.http.options("/api/v1/nothing-here").status_code == 404
    unknown = alpha.http.get("/v1/embeddings")
    assert unknown.status_code == 404 and openai_error(unknown)["type"] == "invalid_request_error"
    wrong = alpha.http.get("/v1/chat/completions")
    assert wrong.status_code == 405 and "POST" in wrong.headers["allow"]
    openai_error(wrong)
    assert alpha.http.get("/api/v1/nothing-here").json() == {"message": "not found"}


def test_nul_characters_are_refused_before_the_database(alpha: Client) -> None:
    """PostgreSQL cannot store a NUL character: it is refused at the edge, wherever it is."""
    for path in ("/api/v1/deployments/x%00y/usage", "/api/v1/jobs?name=a%00b"):
        response = alpha.http.get(path)
        assert response.status_code == 422, path
        assert "NUL" in response.json()["message"]
    key = alpha.http.post("/api/v1/keys", json={"role": "member", "name": "a\u0000b"})
    assert key.status_code == 422
    # an escaped backslash before `u0000` is ordinary text
    fine = alpha.http.post("/api/v1/keys", json={"role": "member", "name": "a\\u0000b"})
    assert fine.status_code == 201 and fine.json()["name"] == "a\\u0000b"
    gateway = alpha.http.get("/v1/models/a%00b")
    assert gateway.status_code == 400 and openai_error(gateway)["code"] == "nul_character"
    body = json.dumps({"model": "a\u0000b", "prompt": "x"})
    response = post_raw(alpha, "/v1/completions", body)
    assert response.status_code == 400 and openai_error(response)["param"] == "model"


def test_a_kind_that_is_not_a_name_is_a_field_error(alpha: Client) -> None:
    """`kind` picks the document's model for friendlier messages; a list or an object there
    must be refused as a bad field, not break the lookup."""
    for path in ("/api/v1/jobs", "/api/v1/contracts", "/api/v1/tenants", "/api/v1/plans"):
        for kind in ({}, [], {"a": 1}):
            response = alpha.http.post(path, json={"kind": kind, "name": "x"})
            assert response.status_code == 422, (path, kind, response.text)
            assert field_of(response) == "kind" or "kind" in response.text
    for kind in ({}, ["Job"]):
        with pytest.raises(SpecError):
            validate_document({"kind": kind, "name": "x"})
