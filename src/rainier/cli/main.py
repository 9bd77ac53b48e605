"""`rainier`: the command line over the control plane's HTTP API."""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from rainier.cli.client import Client, UsageError, save_credentials
from rainier.spec import SpecError, parse_yaml

KIND_PATHS = {
    "Node": "/api/v1/nodes",
    "Tenant": "/api/v1/tenants",
    "Contract": "/api/v1/contracts",
    "Job": "/api/v1/jobs",
    "Deployment": "/api/v1/deployments",
}
TERMINAL = ("succeeded", "failed", "stopped")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def emit(data: Any, output: str, columns: Sequence[str]) -> None:
    items = data["items"] if isinstance(data, dict) and "items" in data else data
    if output == "json":
        click.echo(json.dumps(items, indent=2, default=str))
    else:
        click.echo(table(items if isinstance(items, list) else [items], columns))


output_option = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


class LazyGroup(click.Group):
    """Subcommands with heavy imports (the simulator) load only when they are called."""

    lazy: dict[str, str] = {"sim": "rainier.sim.cli:sim"}  # noqa: RUF012

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, _, attr = self.lazy[name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="RAINIER_URL", help="control plane URL (default: saved or local)")
@click.pass_context
def cli(ctx: click.Context, url: str | None) -> None:
    """rainier: an AI compute cloud you run yourself."""
    ctx.obj = {"url": url}


def client(ctx: click.Context) -> Client:
    return Client(ctx.obj.get("url") if ctx.obj else None)


@cli.command()
@click.option("--host", envvar="RAINIER_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="RAINIER_PORT", default=8000, show_default=True, type=int)
def server(host: str, port: int) -> None:
    """Run the control plane (API, gateway, reconciler) in the foreground."""
    from rainier.api.app import serve
    from rainier.config import Settings

    settings = Settings.from_env(host=host, port=port)
    click.echo(f"rainier control plane on http://{host}:{port} (home {settings.home})", err=True)
    serve(settings)


@cli.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """First start: create the operator key, print it once and save it for this CLI."""
    c = client(ctx)
    out = c.post("/api/v1/init")
    path = save_credentials(c.url, out["key"])
    click.echo(f"operator key (shown once): {out['key']}")
    click.echo(f"saved for this CLI in {path}")


@cli.command()
@click.argument("key")
@click.pass_context
def login(ctx: click.Context, key: str) -> None:
    """Save an API key (and the server URL) for this CLI."""
    c = Client(ctx.obj.get("url"), key)
    c.get("/api/v1/tenants")
    click.echo(f"saved in {save_credentials(c.url, key)}")


# -- nodes ------------------------------------------------------------------------------------


@cli.group()
def node() -> None:
    """The provider's machines."""


@node.command("add")
@click.option(
    "-f", "--file", "path", type=click.Path(dir_okay=False), help="YAML of Node documents"
)
@click.option("--local", is_flag=True, help="register the server's own machine")
@click.pass_context
def node_add(ctx: click.Context, path: str | None, local: bool) -> None:
    """Register nodes (flavor, chips, zone/block/rack labels)."""
    c = client(ctx)
    if local == (path is not None):
        raise UsageError("give exactly one of -f FILE or --local")
    if local:
        out = c.post("/api/v1/nodes/local")
        click.echo(f"node {out['name']}: {out['chips']} {out['flavor']} chips")
        return
    docs = load_documents(path or "")
    bad = [d for d in docs if d.get("kind") != "Node"]
    if bad:
        raise UsageError(f"{path}: only Node documents here, found {bad[0].get('kind')}")
    for doc in docs:
        out = c.post("/api/v1/nodes", doc)
        click.echo(f"node {out['name']}: {out['chips']} {out['flavor']} chips")


@node.command("ls")
@output_option
@click.pass_context
def node_ls(ctx: click.Context, output: str) -> None:
    """List nodes with their use."""
    columns = ["name", "flavor", "chips", "used_chips", "zone", "block", "rack", "source"]
    emit(client(ctx).get("/api/v1/nodes"), output, columns)


@node.command("rm")
@click.argument("name")
@click.pass_context
def node_rm(ctx: click.Context, name: str) -> None:
    """Remove a node."""
    client(ctx).delete(f"/api/v1/nodes/{name}")
    click.echo(f"node {name} removed")


# -- tenants and keys -------------------------------------------------------------------------


@cli.group()
def tenant() -> None:
    """Organisations."""


@tenant.command("create")
@click.argument("name")
@click.option("--display-name")
@click.pass_context
def tenant_create(ctx: click.Context, name: str, display_name: str | None) -> None:
    """Create a tenant."""
    out = client(ctx).post(
        "/api/v1/tenants", {"kind": "Tenant", "name": name, "display_name": display_name}
    )
    click.echo(f"tenant {out['name']} created")


@tenant.command("ls")
@output_option
@click.pass_context
def tenant_ls(ctx: click.Context, output: str) -> None:
    """List tenants."""
    emit(client(ctx).get("/api/v1/tenants"), output, ["name", "display_name", "created_at"])


@cli.group()
def key() -> None:
    """API keys."""


@key.command("create")
@click.option("--tenant")
@click.option(
    "--role",
    type=click.Choice(["operator", "admin", "member"]),
    default="member",
    show_default=True,
)
@click.option("--name", default="")
@click.option("--save", is_flag=True, help="use this key for this CLI from now on")
@click.pass_context
def key_create(ctx: click.Context, tenant: str | None, role: str, name: str, save: bool) -> None:
    """Create an API key; it is shown once."""
    c = client(ctx)
    out = c.post("/api/v1/keys", {"tenant": tenant, "role": role, "name": name})
    click.echo(out["key"])
    if save:
        save_credentials(c.url, out["key"])


@key.command("ls")
@click.option("--tenant")
@output_option
@click.pass_context
def key_ls(ctx: click.Context, tenant: str | None, output: str) -> None:
    """List keys (never their secrets)."""
    emit(
        client(ctx).get("/api/v1/keys", tenant=tenant),
        output,
        ["id", "tenant", "role", "name", "prefix", "revoked_at"],
    )


@key.command("revoke")
@click.argument("key_id")
@click.pass_context
def key_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key."""
    client(ctx).delete(f"/api/v1/keys/{key_id}")
    click.echo(f"key {key_id} revoked")


# -- documents and jobs -----------------------------------------------------------------------


def load_documents(path: str) -> list[dict[str, Any]]:
    """Validates every document before anything is sent: a bad file changes nothing."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    try:
        docs = parse_yaml(text, source=path)
    except SpecError as exc:
        raise UsageError(
            "invalid document:\n  " + "\n  ".join(f"{loc}: {msg}" for loc, msg in exc.problems)
        ) from None
    if not docs:
        raise UsageError(f"{path}: no documents")
    return [d.model_dump(mode="json", exclude_none=False) for d in docs]


@cli.command()
@click.option("-f", "--file", "path", required=True, help="YAML file of documents, or - for stdin")
@click.pass_context
def apply(ctx: click.Context, path: str) -> None:
    """Create or update what the documents describe (Node, Tenant, Contract, Job, Deployment)."""
    c = client(ctx)
    for doc in load_documents(path):
        kind = doc["kind"]
        out = c.post(KIND_PATHS[kind], doc, idempotent=kind == "Job")
        ident = out.get("id") if kind == "Job" else out.get("name")
        click.echo(f"{kind.lower()} {ident} {'submitted' if kind == 'Job' else 'applied'}")


@cli.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="include finished jobs")
@click.option("--tenant")
@click.option("--limit", default=50, show_default=True)
@output_option
@click.pass_context
def ps(ctx: click.Context, show_all: bool, tenant: str | None, limit: int, output: str) -> None:
    """List jobs, newest first."""
    states = None if show_all else ["pending", "running", "stopping"]
    data = client(ctx).get("/api/v1/jobs", state=states, tenant=tenant, limit=limit)
    for item in data["items"]:
        item["chips"] = f"{item['nodes']}x{item['chips_per_node']} {item['flavor']}"
        item["reason"] = (item["reason"] or "")[:60]
    emit(data, output, ["id", "name", "tenant", "state", "chips", "attempt", "reason"])


@cli.command()
@click.argument("job")
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def describe(ctx: click.Context, job: str, output: str) -> None:
    """Everything about a job: state, why it waits, tasks, events, latest metrics."""
    d = client(ctx).get(f"/api/v1/jobs/{job}")
    if output == "json":
        click.echo(json.dumps(d, indent=2, default=str))
        return
    click.echo(describe_text(d))


def describe_text(d: dict[str, Any]) -> str:
    lines = [
        f"Job:        {d['id']} ({d['name']})",
        f"Tenant:     {d['tenant']}",
        f"State:      {d['state']}",
        f"Reason:     {d['reason']}",
        f"Resources:  {d['nodes']} node(s) x {d['chips_per_node']} {d['flavor']} chips, priority {d['priority']}",
        f"Attempt:    {d['attempt']} (restarts {d['restarts']}, preemptions {d['preemptions']})",
    ]
    if d.get("placement"):
        lines.append(f"Placement:  {', '.join(d['placement'])}")
    if d.get("exit_code") is not None:
        lines.append(f"Exit code:  {d['exit_code']}")
    if d.get("metrics"):
        lines.append("Metrics:    " + ", ".join(f"{k}={_fmt(v)}" for k, v in d["metrics"].items()))
    if d.get("tasks"):
        lines.append("Tasks:")
        lines += [
            f"  attempt {t['attempt']} rank {t['rank']} on {t['node']}: {t['state']}"
            + (f" (code {t['exit_code']})" if t["exit_code"] is not None else "")
            for t in d["tasks"]
        ]
    if d.get("events"):
        lines.append("Events:")
        lines += [f"  {e['at'][:19]}  {e['kind']:<14} {e['message']}" for e in d["events"]]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@cli.command()
@click.argument("job")
@click.option("-f", "--follow", is_flag=True, help="keep printing until the job ends")
@click.option("--rank", default=0, show_default=True, help="which task of the gang")
@click.pass_context
def logs(ctx: click.Context, job: str, follow: bool, rank: int) -> None:
    """Print a job's output."""
    for chunk in stream_logs(client(ctx), job, rank, follow):
        click.echo(chunk, nl=False)


def stream_logs(c: Client, job: str, rank: int, follow: bool) -> Iterable[str]:
    offset = 0
    while True:
        out = c.get(f"/api/v1/jobs/{job}/logs", rank=rank, offset=offset)
        if out["data"]:
            yield out["data"]
        offset = out["offset"]
        if not follow or out["done"]:
            return
        if not out["data"]:
            time.sleep(0.25)


@cli.command()
@click.argument("job")
@click.pass_context
def stop(ctx: click.Context, job: str) -> None:
    """Stop a job: SIGTERM (checkpoint and exit), SIGKILL after its grace period."""
    out = client(ctx).post(f"/api/v1/jobs/{job}/stop")
    click.echo(f"job {out['id']}: {out['state']}")


# -- deployments and models -------------------------------------------------------------------


@cli.group()
def deployment() -> None:
    """Models served behind the /v1 gateway (create or update them with `apply -f`)."""


@deployment.command("ls")
@click.option("--tenant")
@output_option
@click.pass_context
def deployment_ls(ctx: click.Context, tenant: str | None, output: str) -> None:
    """List deployments: ready / desired replicas."""
    data = client(ctx).get("/api/v1/deployments", tenant=tenant)
    for item in data["items"]:
        item["ready"] = f"{item['ready_replicas']}/{item['desired_replicas']}"
    emit(data, output, ["name", "tenant", "model", "ready", "revision", "updated_at"])


@deployment.command("describe")
@click.argument("name")
@click.option("--tenant")
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def deployment_describe(ctx: click.Context, name: str, tenant: str | None, output: str) -> None:
    """Everything about a deployment: model, replicas and where they answer, events."""
    d = client(ctx).get(f"/api/v1/deployments/{name}", tenant=tenant)
    if output == "json":
        click.echo(json.dumps(d, indent=2, default=str))
        return
    click.echo(deployment_text(d))


def deployment_text(d: dict[str, Any]) -> str:
    spec = d["spec"]
    limit = spec.get("rate_limit_rpm")
    lines = [
        f"Deployment: {d['name']} ({d['id']})",
        f"Tenant:     {d['tenant']}",
        f"Model:      {d['model']} ({d['model_path']})",
        f"Revision:   {d['revision']}",
        f"Replicas:   {d['ready_replicas']} ready of {d['desired_replicas']} wanted "
        f"(min {spec['replicas']['min']}, max {spec['replicas']['max']}, "
        f"{spec['chips_per_replica']} {spec['flavor']} chips each)",
        f"Scaling:    {spec['target_inflight_per_replica']} requests in flight per replica",
        f"Rate limit: {f'{limit} requests/minute' if limit else 'none'}",
    ]
    if d.get("replica_list"):
        lines.append("Replicas:")
        lines += [
            f"  {r['name']}: {r['state']}, {'ready' if r['ready'] else 'not ready'}"
            + (
                f" at {r['url']}, {r['running']} running, {r['waiting']} waiting"
                if r["url"]
                else ""
            )
            + (f", restarts {r['restarts']}" if r["restarts"] else "")
            for r in d["replica_list"]
        ]
    if d.get("events"):
        lines.append("Events:")
        lines += [f"  {e['at'][:19]}  {e['kind']:<16} {e['message']}" for e in d["events"]]
    return "\n".join(lines)


@deployment.command("rm")
@click.argument("name")
@click.option("--tenant")
@click.pass_context
def deployment_rm(ctx: click.Context, name: str, tenant: str | None) -> None:
    """Delete a deployment; its replicas finish their requests and stop."""
    path = f"/api/v1/deployments/{name}" + (f"?tenant={tenant}" if tenant else "")
    out = client(ctx).delete(path)
    click.echo(f"deployment {out['name']} deleted ({out['replicas_stopping']} replica(s) stopping)")


@cli.group()
def model() -> None:
    """Versioned model folders that deployments serve."""


@model.command("ls")
@click.option("--name")
@click.option("--tenant")
@output_option
@click.pass_context
def model_ls(ctx: click.Context, name: str | None, tenant: str | None, output: str) -> None:
    """List models, every version, newest first."""
    data = client(ctx).get("/api/v1/models", name=name, tenant=tenant)
    emit(data, output, ["name", "version", "tenant", "path", "job_id", "created_at"])


@cli.command()
@click.option("--keep", is_flag=True, help="keep the temporary RAINIER_HOME")
def demo(keep: bool) -> None:
    """Run rainier end to end on this machine in a temporary home."""
    from rainier.demo import run_demo

    run_demo(keep=keep)


def main() -> None:
    cli(prog_name="rainier")


if __name__ == "__main__":
    main()
