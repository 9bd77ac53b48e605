"""`rainier models` lists what training runs registered, against a real control plane."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client
from rainier.cli.main import cli
from rainier.config import Settings

from .trainkit import Reference


def test_models_lists_every_registered_version(reference: Reference, tmp_path: Path) -> None:
    settings = Settings.from_env(
        home=tmp_path, database_url=f"sqlite:///{tmp_path / 'rainier.db'}", port=0
    )
    with EmbeddedServer(settings) as server:
        op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
        op.post("/api/v1/tenants", {"kind": "Tenant", "name": "acme"})
        key = op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"]
        acme = Client(server.url, key)
        for _ in range(2):
            acme.post("/api/v1/models", {"name": "corpus-gpt", "path": str(reference.export_dir)})

        env = {"RAINIER_URL": server.url, "RAINIER_API_KEY": key}
        listed = CliRunner().invoke(cli, ["models"], env=env, catch_exceptions=False)
        assert listed.exit_code == 0, listed.output
        header, *rows = listed.output.splitlines()
        assert header.split()[:3] == ["NAME", "VERSION", "TENANT"]
        assert [row.split()[:3] for row in rows] == [
            ["corpus-gpt", "2", "acme"],
            ["corpus-gpt", "1", "acme"],
        ]
        assert all(str(reference.export_dir) in row for row in rows)

        as_json = CliRunner().invoke(cli, ["models", "--name", "corpus-gpt", "-o", "json"], env=env)
        assert [m["version"] for m in json.loads(as_json.output)] == [2, 1]
        older = CliRunner().invoke(cli, ["model", "ls", "-o", "json"], env=env)
        assert json.loads(older.output) == json.loads(as_json.output)
