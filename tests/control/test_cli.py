"""The `rainier` command against a real server: exit codes, messages, nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rainier.cli.client import Client

from .conftest import Cloud, job_state, wait_until


def rainier(
    cloud: Cloud, home: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAINIER_HOME": str(home), "RAINIER_URL": cloud.server.url}
    return subprocess.run(
        [sys.executable, "-m", "rainier.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cli_tour(cloud: Cloud, tmp_path: Path) -> None:
    home = tmp_path / "cli"
    op_key = cloud.op.key
    assert op_key is not None
    assert rainier(cloud, home, "login", op_key).returncode == 0
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(
        "kind: Node\nname: gpu-1\nflavor: h200\nchips: 8\nlabels: {zone: us-east-1a, block: ultra-1, rack: r1}\n"
        "---\n"
        "kind: Node\nname: gpu-2\nflavor: h200\nchips: 8\nlabels: {zone: us-east-1a, block: ultra-1, rack: r2}\n"
    )
    out = rainier(cloud, home, "node", "add", "-f", str(nodes))
    assert out.returncode == 0, out.stderr
    assert "gpu-2: 8 h200 chips" in out.stdout
    listing = rainier(cloud, home, "node", "ls").stdout
    assert "ultra-1" in listing and "gpu-1" in listing
    assert rainier(cloud, home, "tenant", "create", "openai").returncode == 0
    key = rainier(
        cloud, home, "key", "create", "--tenant", "openai", "--role", "admin"
    ).stdout.strip()
    assert key.startswith("rk_")

    tenant_home = tmp_path / "tenant"
    assert rainier(cloud, tenant_home, "login", key).returncode == 0
    job = tmp_path / "job.yaml"
    job.write_text(
        "kind: Job\nname: hello\nflavor: h200\nchips_per_node: 8\nnodes: 2\n"
        f"command: [{sys.executable}, -c, \"print('hi from', __import__('os').environ['RANK'])\"]\n"
    )
    out = rainier(cloud, tenant_home, "apply", "-f", str(job))
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[1]
    tenant = Client(cloud.server.url, key)
    wait_until(job_state(tenant, job_id, "succeeded"))
    ps = rainier(cloud, tenant_home, "ps", "-a").stdout
    assert job_id in ps and "succeeded" in ps and "2x8 h200" in ps
    logs = rainier(cloud, tenant_home, "logs", "hello", "-f", "--rank", "1")
    assert logs.stdout == "hi from 1\n"
    described = rainier(cloud, tenant_home, "describe", job_id).stdout
    assert "State:      succeeded" in described and "gpu-1" in described


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_documents_exit_2_naming_file_line_and_field(cloud: Cloud, tmp_path: Path) -> None:
    home = tmp_path / "cli"
    assert cloud.op.key is not None
    rainier(cloud, home, "login", cloud.op.key)
    rainier(cloud, home, "tenant", "create", "acme")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: Tenant\nname: fine\n---\n"
        "kind: Contract\nname: c1\ntenant: acme\n"
        "term: {start: 2026-01-01, end: 2027-01-01}\ncommitted_usd: -5\n"
    )
    out = rainier(cloud, home, "apply", "-f", str(bad))
    assert out.returncode == 2
    assert f"{bad}:8: committed_usd" in out.stderr
    assert "greater than or equal to 0" in out.stderr
    # the valid first document was not applied either
    assert "fine" not in rainier(cloud, home, "tenant", "ls").stdout
    assert rainier(cloud, home, "apply", "-f", str(tmp_path / "missing.yaml")).returncode == 2
    out = rainier(cloud, home, "describe", "no-such-job")
    assert out.returncode == 2 and "not found" in out.stderr
    out = rainier(cloud, home, "apply", "-f", "-", stdin="kind: Job\nname: x\ncommand: [echo]\n")
    assert out.returncode == 2 and "tenant" in out.stderr  # an operator must name the tenant


def test_init_prints_and_saves_the_operator_key(tmp_path: Path) -> None:
    from rainier.api.embedded import EmbeddedServer
    from rainier.config import Settings

    settings = Settings.from_env(home=tmp_path / "srv", port=0)
    with EmbeddedServer(settings) as server:
        env = {**os.environ, "RAINIER_HOME": str(tmp_path / "cli"), "RAINIER_URL": server.url}
        run = [sys.executable, "-m", "rainier.cli.main"]
        out = subprocess.run([*run, "init"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        key = out.stdout.split("operator key (shown once): ")[1].split()[0]
        assert key in (tmp_path / "cli" / "credentials.json").read_text()
        again = subprocess.run([*run, "init"], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "already initialised" in again.stderr
        out = subprocess.run(
            [*run, "tenant", "ls"], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and out.stdout.startswith("NAME")
