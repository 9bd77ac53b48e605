"""Profiles, documents from folders and stdin, names, and errors said in a line, through the
real CLI against a real server."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

from rainier.cli.client import Client

from .clikit import rainier
from .conftest import Cloud, job_state, wait_until

SLEEP = f"command: [{sys.executable}, -c, 'import time; time.sleep(60)']\n"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_profiles_keep_both_keys(cloud: Cloud, tmp_path: Path) -> None:
    url, home = cloud.server.url, tmp_path / "cli"
    assert cloud.op.key is not None
    out = rainier(url, home, "login", cloud.op.key)
    assert out.returncode == 0, out.stderr
    assert "profile operator" in out.stdout
    assert rainier(url, home, "tenant", "create", "acme").returncode == 0
    key = rainier(url, home, "key", "create", "--tenant", "acme", "--role", "admin").stdout.strip()
    out = rainier(url, home, "login", key)
    assert out.returncode == 0 and "admin of acme" in out.stdout and "profile acme" in out.stdout

    listing = rainier(url, home, "profiles").stdout
    assert "operator" in listing and "acme" in listing
    assert key not in listing and cloud.op.key not in listing  # keys are masked
    me = json.loads(rainier(url, home, "whoami", "-o", "json").stdout)
    assert (me["role"], me["tenant"], me["profile"]) == ("admin", "acme", "acme")
    # the operator's key is still there: an operator command works by naming its profile
    out = rainier(url, home, "--profile", "operator", "tenant", "ls")
    assert out.returncode == 0 and "acme" in out.stdout
    out = rainier(url, home, "tenant", "create", "other", env={"RAINIER_PROFILE": "operator"})
    assert out.returncode == 0, out.stderr
    out = rainier(url, home, "tenant", "create", "third")  # current profile: the tenant admin
    assert out.returncode == 1 and "operator" in out.stderr

    # another key for the same tenant does not silently replace the saved one
    second = rainier(
        url, home, "--profile", "operator", "key", "create", "--tenant", "acme"
    ).stdout.strip()
    out = rainier(url, home, "login", second)
    assert out.returncode == 2 and "already holds another key" in out.stderr
    creds = json.loads((home / "credentials.json").read_text())
    assert creds["profiles"]["acme"]["key"] == key
    assert creds["profiles"]["operator"]["key"] == cloud.op.key
    assert rainier(url, home, "login", second, "--profile", "acme-member").returncode == 0
    assert rainier(url, home, "profiles", "use", "operator").returncode == 0
    assert json.loads(rainier(url, home, "whoami", "-o", "json").stdout)["role"] == "operator"
    # RAINIER_API_KEY overrides the profile's key
    out = rainier(url, home, "whoami", "-o", "json", env={"RAINIER_API_KEY": key})
    assert json.loads(out.stdout)["tenant"] == "acme"
    out = rainier(url, home, "--profile", "nobody", "ps")
    assert out.returncode == 2 and "no profile 'nobody'" in out.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_apply_folders_stdin_names_and_delete(cloud: Cloud, tmp_path: Path) -> None:
    url, home = cloud.server.url, tmp_path / "cli"
    assert cloud.op.key is not None
    rainier(url, home, "login", cloud.op.key)
    specs = tmp_path / "specs"
    (specs / "nested").mkdir(parents=True)
    # the contract's file sorts first, yet its tenant is applied before it
    (specs / "a-contract.yaml").write_text(
        "kind: Contract\nname: acme-c\ntenant: acme\n"
        "term: {start: 2099-01-01, end: 2100-01-01}\ncommitted_usd: 10\n"
    )
    (specs / "nested" / "b-tenant.yml").write_text("kind: Tenant\nname: acme\n")
    (specs / "nodes.yaml").write_text(
        "kind: Node\nname: n1\nflavor: cpu\nchips: 2\n---\nkind: Node\nname: n2\nflavor: cpu\nchips: 2\n"
    )
    (specs / "notes.txt").write_text("not a document")
    out = rainier(url, home, "apply", "-f", str(specs))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "node n1 applied",
        "node n2 applied",
        "tenant acme applied",
        "contract acme-c applied",
    ]
    key = cloud.op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"]
    tenant_home = tmp_path / "tenant"
    rainier(url, tenant_home, "login", key)
    job = f"kind: Job\nname: sleeper\n{SLEEP}"
    out = rainier(url, tenant_home, "apply", "-f", "-", stdin=job)
    assert out.returncode == 0, out.stderr
    first = out.stdout.split()[1]
    acme = Client(url, key)
    wait_until(job_state(acme, first, "running"), 60)

    again = rainier(url, tenant_home, "apply", "-f", "-", stdin=job)
    assert again.returncode == 2
    assert f"'sleeper' is already running ({first})" in again.stderr and "--replace" in again.stderr
    assert len(acme.get("/api/v1/jobs", name="sleeper")["items"]) == 1  # nothing written

    replaced = rainier(url, tenant_home, "apply", "--replace", "-f", "-", stdin=job)
    assert replaced.returncode == 0, replaced.stderr
    second = replaced.stdout.split()[1]
    assert second != first
    wait_until(job_state(acme, first, "stopped"), 60)
    assert acme.get("/api/v1/jobs/sleeper")["id"] == second  # the name means the live one

    job_file = tmp_path / "job.yaml"
    job_file.write_text(job)
    out = rainier(url, tenant_home, "delete", "-f", str(job_file))
    assert out.returncode == 0, out.stderr
    wait_until(job_state(acme, second, "stopped"), 60)
    out = rainier(url, home, "delete", "-f", str(specs))
    assert out.returncode == 2 and "cannot be deleted" in out.stderr and "nothing" in out.stderr
    assert len(cloud.op.get("/api/v1/nodes")["items"]) == 2
    (specs / "a-contract.yaml").unlink()
    (specs / "nested" / "b-tenant.yml").unlink()
    out = rainier(url, home, "delete", "-f", str(specs))
    assert out.returncode == 0, out.stderr
    assert cloud.op.get("/api/v1/nodes")["items"] == []


def test_friendly_messages_version_and_help(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"  # nothing is sent for a bad document
    home = tmp_path / "cli"
    out = rainier(
        url,
        home,
        "apply",
        "-f",
        "-",
        stdin="kind: Job\nname: Bad_Name\nflavour: cpu\ncommand: [x]\n",
    )
    assert out.returncode == 2
    assert "<stdin>:2: name: 'Bad_Name' is not a valid name" in out.stderr
    assert "lowercase letters, digits or '-'" in out.stderr
    assert "<stdin>:3: flavour: unknown field 'flavour'; did you mean 'flavor'?" in out.stderr
    out = rainier(
        url,
        home,
        "apply",
        "-f",
        "-",
        stdin="kind: Job\nname: j\ncommand: [x]\ntrain: {date: [a]}\n",
    )
    assert "did you mean 'data'?" in out.stderr
    out = rainier(url, home, "--version")
    assert out.returncode == 0 and out.stdout.startswith("rainier, version ")
    out = rainier(url, home, "server", "--help", env={"RAINIER_PORT": "9123"})
    assert "[default: 9123" in out.stdout and "8000" not in out.stdout
    assert "[default: 8000" in rainier(url, home, "server", "--help").stdout


def test_unreachable_server_is_said_at_once(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nobody listens there
    started = time.monotonic()
    out = rainier(f"http://127.0.0.1:{port}", tmp_path / "cli", "ps")
    took = time.monotonic() - started
    assert out.returncode == 1
    assert f"cannot reach the control plane at http://127.0.0.1:{port}" in out.stderr
    assert "rainier server" in out.stderr and "Traceback" not in out.stderr
    assert took < 10  # a process start and one refused connection; it was seconds of retries


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"RAINIER_EXECUTOR": "kubernetes"}, "RAINIER_EXECUTOR must be one of local, ray"),
        ({"RAINIER_DATABASE_URL": "not a url"}, "RAINIER_DATABASE_URL is not a database URL"),
        (
            {"RAINIER_DATABASE_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:9/db"},
            "cannot connect to the database postgresql+psycopg://u:***@127.0.0.1:9/db",
        ),
        ({"RAINIER_PORT": "http"}, "'http' is not a valid integer"),
    ],
)
def test_configuration_errors_are_one_line(tmp_path: Path, env: dict[str, str], said: str) -> None:
    out = rainier("http://127.0.0.1:9", tmp_path / "home", "server", env=env)
    assert out.returncode == 2
    assert said in out.stderr
    assert "Traceback" not in out.stderr and "hunter2" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 4  # at most click's usage lines and the error
