"""Per-key request and token limits at the gateway, with the official `openai` client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from rainier.cli.client import Client
from rainier.cli.main import cli

from .conftest import Cloud


def member_key(cloud: Cloud, **limits: int) -> Client:
    made = cloud.op.post("/api/v1/keys", {"tenant": "acme", "role": "member", **limits})
    return Client(cloud.url, made["key"])


def test_key_over_its_rpm_is_429_while_another_key_is_served(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    limited = cloud.openai(member_key(cloud, rate_limit_rpm=2), max_retries=0)
    first = limited.completions.with_raw_response.create(model="chat", prompt="a", max_tokens=1)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    limited.completions.create(model="chat", prompt="a", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        limited.completions.create(model="chat", prompt="a", max_tokens=1)
    response = caught.value.response
    assert caught.value.code == "rate_limit_exceeded"
    assert response.json()["error"]["type"] == "requests"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    other = cloud.openai(member_key(cloud), max_retries=0)
    answer = other.completions.create(model="chat", prompt="a", max_tokens=1, temperature=0)
    assert answer.choices[0].text


def test_key_over_its_tpm_is_429_after_its_real_usage_is_charged(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    limited = cloud.openai(member_key(cloud, rate_limit_tpm=100), max_retries=0)
    with pytest.raises(openai.RateLimitError) as too_big:
        limited.completions.create(model="chat", prompt="x", max_tokens=200)
    assert too_big.value.response.headers["x-should-retry"] == "false"
    assert "100 tokens per minute" in too_big.value.message

    # Admitted on an estimate of 20 + 1 tokens (a character is taken for a quarter token);
    # the real prompt is 81 tokens, and that is what the key is charged once it is answered.
    rockets = limited.completions.create(model="chat", prompt="\U0001f680" * 80, max_tokens=1)
    assert rockets.usage is not None and rockets.usage.total_tokens >= 81
    # 1 + 60 would fit in what the estimate left (79), not in what the usage left (18).
    with pytest.raises(openai.RateLimitError) as caught:
        limited.completions.create(model="chat", prompt="a", max_tokens=60)
    response = caught.value.response
    assert caught.value.code == "rate_limit_exceeded"
    assert response.json()["error"]["type"] == "tokens"
    assert response.headers["x-ratelimit-limit-tokens"] == "100"
    assert int(response.headers["retry-after"]) >= 10
    other = cloud.openai(member_key(cloud), max_retries=0)
    assert other.completions.create(model="chat", prompt="a", max_tokens=60).usage is not None


def test_a_request_the_replica_refuses_costs_no_tokens(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    limited = cloud.openai(member_key(cloud, rate_limit_tpm=100), max_retries=0)
    with pytest.raises(openai.BadRequestError):
        limited.completions.create(model="chat", prompt="a", max_tokens=90, temperature=3.0)
    answered = limited.completions.with_raw_response.create(model="chat", prompt="a", max_tokens=90)
    assert answered.parse().choices[0].text
    assert int(answered.headers["x-ratelimit-remaining-tokens"]) <= 9


def test_bad_limits_are_refused_naming_the_field(cloud: Cloud, acme: Client) -> None:
    for field, value in (("rate_limit_rpm", 0), ("rate_limit_tpm", -5), ("rate_limit_rpm", "x")):
        response = httpx.post(
            f"{cloud.url}/api/v1/keys",
            headers={"Authorization": f"Bearer {acme.key}"},
            json={"role": "member", field: value},
        )
        assert response.status_code == 422
        assert [p["field"] for p in response.json()["problems"]] == [field]
    env = {"RAINIER_URL": cloud.url, "RAINIER_API_KEY": acme.key or ""}
    for flag in ("--rpm", "--tpm"):
        refused = CliRunner().invoke(cli, ["key", "create", flag, "0"], env=env)
        assert refused.exit_code == 2 and flag in refused.output


def test_limits_are_set_at_creation_and_listed(cloud: Cloud, acme: Client) -> None:
    env = {"RAINIER_URL": cloud.url, "RAINIER_API_KEY": cloud.op.key or ""}
    args = ["key", "create", "--tenant", "acme", "--role", "member", "--name", "limited"]
    made = CliRunner().invoke(cli, [*args, "--rpm", "60", "--tpm", "100000"], env=env)
    assert made.exit_code == 0, made.output
    listed = CliRunner().invoke(cli, ["key", "ls", "--tenant", "acme", "-o", "json"], env=env)
    keys = [k for k in json.loads(listed.output) if k["name"] == "limited"]
    assert [(k["rate_limit_rpm"], k["rate_limit_tpm"]) for k in keys] == [(60, 100000)]
    table = CliRunner().invoke(cli, ["key", "ls", "--tenant", "acme"], env=env).output
    line = next(line for line in table.splitlines() if " limited " in line)
    assert "60" in line.split() and "100000" in line.split()
