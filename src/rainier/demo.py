"""`rainier demo`: the whole path on one machine, through the same HTTP API users call.

An embedded control plane in a temporary RAINIER_HOME; this machine registered as a node; a
tenant with a contract; a job run to completion. Each step is a function so the demo grows
step by step with the platform.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from rainier.api.embedded import EmbeddedServer
from rainier.cli.billing import statement_text
from rainier.cli.client import Client
from rainier.cli.logs import stream_logs
from rainier.cli.render import describe_text
from rainier.config import Settings
from rainier.store.lifecycle import LIVE_JOB_STATES, TERMINAL_JOB_STATES, JobState

TENANT = "acme-ai"


def say(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


def wait_for(client: Client, job_id: str, timeout_s: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}")
        if job["state"] in TERMINAL_JOB_STATES:
            return job
        time.sleep(0.2)
    raise click.ClickException(f"job {job_id} did not finish in {timeout_s:.0f} s")


def setup_cloud(op: Client) -> Client:
    say("The provider registers this machine and signs a tenant")
    node = op.post("/api/v1/nodes/local")
    click.echo(f"node {node['name']}: {node['chips']} {node['flavor']} chips")
    op.post("/api/v1/tenants", {"kind": "Tenant", "name": TENANT, "display_name": "Acme AI"})
    now = datetime.now(UTC)
    contract = op.post(
        "/api/v1/contracts",
        {
            "kind": "Contract",
            "name": f"{TENANT}-2026",
            "tenant": TENANT,
            "term": {
                "start": (now - timedelta(days=1)).isoformat(),
                "end": (now + timedelta(days=365)).isoformat(),
            },
            "committed_usd": "1000.00",
            "guaranteed_chips": {"cpu": 1},
            "discount": "0.20",
            "backdate": True,  # a day of reservations, so the bill shows them
        },
    )
    click.echo(
        f"contract {contract['name']}: ${contract['committed_usd']} committed, "
        f"guaranteed {contract['spec']['guaranteed_chips']}"
    )
    admin = op.post("/api/v1/keys", {"tenant": TENANT, "role": "admin", "name": "demo"})
    click.echo(f"tenant {TENANT} gets an admin key {admin['prefix']}...")
    return Client(op.url, admin["key"])


def run_command_job(tenant: Client) -> None:
    say("The tenant runs a job")
    job = tenant.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "hello",
            "command": [
                sys.executable,
                "-c",
                "import os; print('hello from rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])",
            ],
            "flavor": "cpu",
            "chips_per_node": 1,
        },
        idempotent=True,
    )
    done = wait_for(tenant, job["id"])
    for chunk in stream_logs(tenant, job["id"], 0, keep_following=False):
        click.echo(chunk, nl=False)
    click.echo(describe_text(tenant.get(f"/api/v1/jobs/{done['id']}")))
    if done["state"] != JobState.SUCCEEDED:
        raise click.ClickException(f"job ended {done['state']}")


TRAIN_STEPS_ENV = "RAINIER_DEMO_TRAIN_STEPS"
TRAIN_STEPS = 300
CORPUS_BYTES = 2 << 20


def train_model(tenant: Client) -> None:
    """A real training job: a small Llama-style model on the Python standard library's own
    source (a corpus every machine with Python has), exported in HF format and registered as a
    model by the job itself. The loss is shown as the job reports it, so falling is visible."""
    say("The tenant trains a model on the Python standard library's source")
    from rainier.train.data import stdlib_sample

    home = Path(os.environ["RAINIER_HOME"])
    # under the tenant's storage prefix: the one place of the server's home its tasks may read
    corpus = stdlib_sample(home / "storage" / TENANT / "datasets" / "stdlib", CORPUS_BYTES)
    files = list(corpus.iterdir())
    click.echo(
        f"corpus: {len(files)} modules, {sum(f.stat().st_size for f in files) >> 10} KiB "
        "of the standard library"
    )
    steps = int(os.environ.get(TRAIN_STEPS_ENV) or TRAIN_STEPS)
    every = max(1, steps // 10)
    job = tenant.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "train-demo-gpt",
            "train": {
                "preset": "tiny",
                "overrides": {
                    "dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2,
                    "ffn_dim": 384, "vocab_size": 1024,
                },
                "data": [str(corpus)],
                "steps": steps,
                "batch_size": 8,
                "seq_len": 128,
                "lr": 3e-3,
                "checkpoint_every": max(every, steps // 3),
                "log_every": every,
                "eval_every": steps,
                "model_name": "demo-gpt",
            },
            "flavor": "cpu",
            "chips_per_node": 1,
            "max_restarts": 1,
        },
        idempotent=True,
    )  # fmt: skip
    losses = show_losses(tenant, job["id"])
    done = wait_for(tenant, job["id"])
    if losses:
        (s0, first), (s1, last) = losses[0], losses[-1]
        click.echo(f"loss fell from {first:.3f} (step {s0}) to {last:.3f} (step {s1})")
    detail = tenant.get(f"/api/v1/jobs/{done['id']}")
    metrics = detail.get("metrics") or {}
    shown = ", ".join(
        f"{k}={v:.4g}"
        for k, v in metrics.items()
        if k in ("step", "loss", "val_loss", "tokens_per_s", "mfu")
    )
    click.echo(f"job {done['id']} {done['state']}: {shown}")
    if done["state"] != JobState.SUCCEEDED:
        for chunk in stream_logs(tenant, done["id"], 0, keep_following=False):
            click.echo(chunk, nl=False)
        raise click.ClickException(f"training ended {done['state']}")
    models = tenant.get("/api/v1/models")["items"]
    click.echo("models: " + ", ".join(f"{m['name']}:{m['version']} ({m['path']})" for m in models))


def show_losses(tenant: Client, job_id: str) -> list[tuple[int, float]]:
    """Follow rank 0's JSON lines while the job runs and print one compact line per report."""
    losses: list[tuple[int, float]] = []
    pending = ""
    for chunk in stream_logs(tenant, job_id, 0, keep_following=True):
        *lines, pending = (pending + chunk).split("\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or "loss" not in record:
                continue
            losses.append((int(record["step"]), float(record["loss"])))
            extra = f"  val_loss {record['val_loss']:.3f}" if "val_loss" in record else ""
            click.echo(
                f"step {record['step']:>5}  loss {record['loss']:.3f}  "
                f"{record['tokens_per_s']:>7.0f} tokens/s{extra}"
            )
    return losses


def demo_model(tenant: Client) -> str:
    """The newest model the tenant has (a training step registers one), else a tiny random
    Llama built here: nothing is downloaded."""
    models = tenant.get("/api/v1/models", limit=1)["items"]
    if models:
        return f"{models[0]['name']}:{models[0]['version']}"
    from rainier.serve.tiny_model import build_tiny_llama

    # a tenant registers folders under its own storage prefix
    prefix = Path(os.environ["RAINIER_HOME"]) / "storage" / TENANT
    folder = build_tiny_llama(prefix / "models" / "tiny-llama")
    out = tenant.post("/api/v1/models", {"name": "tiny-llama", "path": str(folder)})
    click.echo(f"registered a tiny random Llama as model {out['name']}:{out['version']}")
    return f"{out['name']}:{out['version']}"


def wait_for_token_lines(tenant: Client, timeout_s: float = 30) -> None:
    """Tokens are priced into the ledger a moment after the request that used them."""
    since = datetime.now(UTC).strftime("%Y-%m-01")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kinds = {g["group"] for g in tenant.get("/api/v1/usage", by="kind", since=since)["groups"]}
        if "output_tokens" in kinds:
            return
        time.sleep(0.25)


def deploy_and_query(tenant: Client) -> None:
    say("The tenant deploys a model and asks it through the OpenAI-compatible gateway")
    from openai import OpenAI

    model = demo_model(tenant)
    tenant.post(
        "/api/v1/deployments",
        {"kind": "Deployment", "name": "demo-chat", "model": model, "rate_limit_rpm": 600},
    )
    deadline = time.monotonic() + 600
    while tenant.get("/api/v1/deployments/demo-chat")["ready_replicas"] < 1:
        if time.monotonic() > deadline:
            raise click.ClickException("the deployment did not become ready in 600 s")
        time.sleep(0.5)
    click.echo(f"deployment demo-chat serves {model}")
    try:
        oai = OpenAI(base_url=f"{tenant.url}/v1", api_key=tenant.key)
        answer = oai.chat.completions.create(
            model="demo-chat",
            messages=[{"role": "user", "content": "hello compute cloud"}],
            max_tokens=12,
        )
        click.echo(f"answer: {answer.choices[0].message.content!r}")
        if answer.usage is not None:
            click.echo(
                f"metered: {answer.usage.prompt_tokens} input + "
                f"{answer.usage.completion_tokens} output tokens"
            )
        wait_for_token_lines(tenant)
    finally:
        tenant.delete("/api/v1/deployments/demo-chat")
        live = list(LIVE_JOB_STATES)
        deadline = time.monotonic() + 120
        while tenant.get("/api/v1/jobs", kind="replica", state=live)["items"]:
            if time.monotonic() > deadline:
                raise click.ClickException("the replicas of demo-chat did not stop in 120 s")
            time.sleep(0.2)
        click.echo("deployment demo-chat deleted; its replica stopped")


def print_bill(tenant: Client) -> None:
    """Last: the month's statement of everything the steps before ran, from the ledger."""
    say("The tenant reads its bill for this month")
    month = datetime.now(UTC).strftime("%Y-%m")
    served = tenant.get("/api/v1/deployments")["items"]
    deadline = time.monotonic() + 30
    while served and time.monotonic() < deadline:
        kinds = {
            g["group"]
            for g in tenant.get("/api/v1/usage", by="kind", since=f"{month}-01")["groups"]
        }
        if "output_tokens" in kinds:
            break
        time.sleep(0.25)  # tokens are priced a moment after the request that used them
    for contract in tenant.get("/api/v1/contracts")["items"]:
        st = tenant.get(f"/api/v1/contracts/{contract['name']}/statement", month=month)
        click.echo(statement_text(st))
    usage = tenant.get("/api/v1/usage", by="job", since=f"{month}-01")
    for g in usage["groups"]:
        click.echo(f"  {g['group']}: {g['quantity']} {g['unit']}s, {g['amount_usd']} USD")


STEPS: list[Callable[[Client], None]] = [
    run_command_job,
    train_model,
    deploy_and_query,
    print_bill,
]


def run_demo(keep: bool = False) -> None:
    home = Path(tempfile.mkdtemp(prefix="rainier-demo-"))
    os.environ["RAINIER_HOME"] = str(home)
    settings = Settings.from_env(home=home, port=0, database_url=f"sqlite:///{home / 'rainier.db'}")
    click.secho(f"rainier demo: embedded control plane, home {home}", bold=True)
    try:
        with EmbeddedServer(settings) as server:
            click.echo(f"control plane listening on {server.url}")
            op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
            tenant = setup_cloud(op)
            for step in STEPS:
                step(tenant)
        click.secho("\ndemo finished", bold=True)
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
