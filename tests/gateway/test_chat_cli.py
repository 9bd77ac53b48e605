"""`rainier chat` as a user runs it: a real process, lines piped to its stdin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

from rainier.cli.client import Client

from .conftest import Cloud, written


def run_chat(
    cloud: Cloud, client: Client, lines: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAINIER_URL": cloud.url, "RAINIER_API_KEY": client.key or ""}
    return subprocess.run(
        [sys.executable, "-m", "rainier.cli.main", "chat", *args],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_chat_streams_answers_and_keeps_the_history(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    written(cloud)
    before = len(acme.get("/api/v1/deployments/chat/usage", limit=10000)["items"])
    done = run_chat(
        cloud,
        acme,
        "hello world\n\nthe snow\n/exit\nnot sent\n",
        "chat",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--system",
        "be brief",
        "--usage",
    )
    assert done.returncode == 0, done.stderr
    answers = done.stdout.splitlines()
    assert len(answers) == 2 and all(answers)
    turns = [
        (int(p), int(c))
        for p, c in re.findall(r"\[(\d+) prompt \+ (\d+) completion tokens\]", done.stderr)
    ]
    assert len(turns) == 2
    (first_prompt, first_answer), (second_prompt, _) = turns
    assert second_prompt > first_prompt + first_answer, "the second turn carries the first"
    written(cloud)
    after = len(acme.get("/api/v1/deployments/chat/usage", limit=10000)["items"])
    assert after == before + 2


def test_chat_ends_at_end_of_input_and_reports_an_unknown_model(
    cloud: Cloud, acme: Client, chat: dict[str, Any]
) -> None:
    assert run_chat(cloud, acme, "", "chat").returncode == 0
    missing = run_chat(cloud, acme, "hi\n", "nope")
    assert missing.returncode == 2
    assert "nope" in missing.stderr and "does not exist" in missing.stderr
