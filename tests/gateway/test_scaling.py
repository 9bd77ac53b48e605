"""Replicas scale with load and come back when killed, while requests keep being answered."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from rainier.cli.client import Client

from .conftest import READY_S, Cloud, ready_replicas, wait_until, written


@dataclass
class Traffic:
    answered: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def traffic(oai: openai.OpenAI, threads: int, max_tokens: int, stream: bool) -> Iterator[Traffic]:
    """`threads` clients sending completions back to back until the block ends."""
    stop = threading.Event()
    seen = Traffic()

    def client() -> None:
        while not stop.is_set():
            try:
                if stream:
                    chunks = oai.completions.create(
                        model="chat",
                        prompt="every request",
                        max_tokens=max_tokens,
                        stream=True,
                        extra_body={"ignore_eos": True},
                    )
                    text = "".join(c.choices[0].text for c in chunks if c.choices)
                else:
                    answer = oai.completions.create(
                        model="chat",
                        prompt="every request",
                        max_tokens=max_tokens,
                        extra_body={"ignore_eos": True},
                    )
                    text = answer.choices[0].text
                with seen.lock:
                    seen.answered += 1
                    if not text:
                        seen.errors.append("empty answer")
            except openai.OpenAIError as exc:
                with seen.lock:
                    seen.errors.append(repr(exc))

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    try:
        yield seen
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=120)


def events(client: Client, kind: str) -> list[dict[str, Any]]:
    return [e for e in client.get("/api/v1/deployments/chat")["events"] if e["kind"] == kind]


def test_scales_up_under_load_and_back_down_when_idle(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    with traffic(cloud.openai(acme), threads=6, max_tokens=48, stream=True) as seen:
        wait_until(ready_replicas(acme, "chat", 2), READY_S, "a second ready replica")
        answered = seen.answered
        wait_until(lambda: seen.answered > answered + 4, 60, "answers from both replicas")
    assert seen.errors == []
    assert events(acme, "scaled-up")
    wait_until(
        lambda: (
            (d := acme.get("/api/v1/deployments/chat"))["desired_replicas"] == 1
            and d["replicas"] == 1
        ),
        60,
        "the deployment to shrink back to one replica",
    )
    assert events(acme, "scaled-down")
    stopped = acme.get("/api/v1/jobs", kind="replica", state=["stopped"])["items"]
    assert len(stopped) == 1, "\n".join(
        str((e["at"][11:23], e["kind"], e["message"]))
        for e in acme.get("/api/v1/deployments/chat")["events"]
    )
    tasks = acme.get(f"/api/v1/jobs/{stopped[0]['id']}")["tasks"]
    assert tasks[-1]["exit_code"] in (0, -signal.SIGTERM), "drained, then stopped by SIGTERM"


def test_killed_replica_restarts_and_requests_keep_being_answered(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    before = wait_until(ready_replicas(acme, "chat"), READY_S)
    replica = next(r for r in before["replica_list"] if r["ready"])
    job = acme.get(f"/api/v1/jobs/{replica['id']}")
    task = next(t for t in job["tasks"] if t["attempt"] == job["attempt"])
    pid = int((cloud.server.settings.tasks_dir / task["id"] / "pid").read_text())
    with traffic(cloud.openai(acme, max_retries=0), threads=2, max_tokens=4, stream=False) as seen:
        wait_until(lambda: seen.answered >= 2, 60, "traffic to flow")
        os.killpg(pid, signal.SIGKILL)
        wait_until(
            lambda: acme.get(f"/api/v1/jobs/{replica['id']}")["restarts"] >= 1,
            60,
            "the replica to restart",
        )
        after = wait_until(
            lambda: (
                (d := ready_replicas(acme, "chat")())
                and any(r["url"] != replica["url"] and r["ready"] for r in d["replica_list"])
                and d
            ),
            READY_S,
            "the restarted replica to be ready",
        )
        answered = seen.answered
        wait_until(lambda: seen.answered >= answered + 3, 60, "answers after the restart")
    assert seen.errors == []
    now = acme.get(f"/api/v1/jobs/{replica['id']}")
    assert now["state"] == "running" and now["attempt"] >= 1
    assert [r["id"] for r in after["replica_list"]] == [replica["id"]]


def test_new_model_version_rolls_out_while_requests_keep_being_answered(
    cloud: Cloud, acme: Client, chat: dict[str, Any], model_dir: Path
) -> None:
    before = wait_until(ready_replicas(acme, "chat"), READY_S)
    old = {r["id"] for r in before["replica_list"]}
    assert acme.post("/api/v1/models", {"name": "tiny", "path": str(model_dir)})["version"] == 2
    spec = {k: v for k, v in before["spec"].items() if k != "tenant"}

    def replaced() -> dict[str, Any] | None:
        d: dict[str, Any] = acme.get("/api/v1/deployments/chat")
        ids = {r["id"] for r in d["replica_list"]}
        return d if d["ready_replicas"] == len(ids) == 1 and not ids & old else None

    with traffic(cloud.openai(acme, max_retries=0), threads=2, max_tokens=4, stream=False) as seen:
        wait_until(lambda: seen.answered >= 2, 60, "traffic to flow")
        applied = acme.post("/api/v1/deployments", {**spec, "model": "tiny:2"})
        assert (applied["model"], applied["revision"]) == ("tiny:2", before["revision"] + 1)
        wait_until(replaced, READY_S, "a replica of the new revision to replace the old")
        answered = seen.answered
        wait_until(lambda: seen.answered >= answered + 2, 60, "answers from the new revision")
    assert seen.errors == []
    written(cloud)
    usage = acme.get("/api/v1/deployments/chat/usage", limit=10000)["items"]
    assert usage[0]["model"] == "tiny:1" and usage[-1]["model"] == "tiny:2"
