"""`rainier deployment` and `rainier model` against the shared server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from rainier.cli.client import Client
from rainier.cli.main import cli

from .conftest import Cloud


def rainier(cloud: Cloud, client: Client, *args: str) -> Result:
    env = {"RAINIER_URL": cloud.url, "RAINIER_API_KEY": client.key or ""}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_deployment_and_model_commands(
    cloud: Cloud,
    acme: Client,
    globex: Client,
    chat: dict[str, Any],
    tmp_path: Path,
    model_dir: Path,
) -> None:
    listing = rainier(cloud, acme, "deployment", "ls")
    assert listing.exit_code == 0
    row = next(line for line in listing.output.splitlines() if line.startswith("chat "))
    assert "acme" in row and "tiny:1" in row

    described = rainier(cloud, acme, "deployment", "describe", "chat")
    assert described.exit_code == 0
    assert "Model:      tiny:1" in described.output
    assert "ready at http://127.0.0.1:" in described.output
    as_json = json.loads(
        rainier(cloud, acme, "deployment", "describe", "chat", "-o", "json").output
    )
    assert as_json["name"] == "chat" and as_json["ready_replicas"] >= 1

    models = rainier(cloud, acme, "model", "ls", "--name", "tiny")
    assert models.exit_code == 0 and str(model_dir) in models.output

    assert rainier(cloud, globex, "deployment", "describe", "chat").exit_code == 2
    assert rainier(cloud, globex, "deployment", "rm", "chat").exit_code == 2

    doc = tmp_path / "idle.yaml"
    doc.write_text(
        f"kind: Deployment\nname: idle\nmodel: {model_dir}\nreplicas: {{min: 0, max: 1}}\n"
    )
    applied = rainier(cloud, acme, "apply", "-f", str(doc))
    assert applied.exit_code == 0 and "deployment idle applied" in applied.output
    removed = rainier(cloud, acme, "deployment", "rm", "idle")
    assert removed.exit_code == 0 and "idle deleted" in removed.output
    assert "idle" not in rainier(cloud, acme, "deployment", "ls").output
