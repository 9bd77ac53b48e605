"""`rainier`: the command line over the control plane's HTTP API."""

from __future__ import annotations

import importlib
import json
from typing import Any

import click

from rainier import __version__
from rainier.cli.account import init, login, profiles, whoami
from rainier.cli.billing import bill, contract_group, usage
from rainier.cli.client import Client, UsageError
from rainier.cli.documents import apply, delete, load_documents
from rainier.cli.logs import logs
from rainier.cli.plans import quota
from rainier.cli.processes import controller, server
from rainier.cli.profiles import Profile, ProfileConflict, store_profile
from rainier.cli.render import describe_text, emit
from rainier.store.lifecycle import LIVE_JOB_STATES

output_option = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


class LazyGroup(click.Group):
    """Subcommands with heavy imports (the simulator) load only when they are called; the
    group's help lists them from `lazy_help` without importing them."""

    lazy: dict[str, str] = {  # noqa: RUF012
        "sim": "rainier.sim.commands:sim",
        "chat": "rainier.cli.chat:chat",
        "admin": "rainier.admin:admin",
    }
    lazy_help: dict[str, str] = {  # noqa: RUF012
        "sim": "Capacity planning: the live scheduler on traces, simulated time.",
        "chat": "Chat with a deployment through the /v1 gateway.",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, _, attr = self.lazy[name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows = []
        for name in names:
            if name in self.lazy_help:
                rows.append((name, self.lazy_help[name]))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="rainier")
@click.option(
    "--url",
    envvar="RAINIER_URL",
    show_envvar=True,
    help="control plane URL [default: the profile's, else http://127.0.0.1:$RAINIER_PORT]",
)
@click.option(
    "--profile",
    envvar="RAINIER_PROFILE",
    show_envvar=True,
    help="saved login to use [default: the last one logged in or chosen]; RAINIER_API_KEY "
    "overrides its key",
)
@click.pass_context
def cli(ctx: click.Context, url: str | None, profile: str | None) -> None:
    """rainier: an AI compute cloud you run yourself."""
    ctx.obj = {"url": url, "profile": profile}


for _command in (
    init,
    login,
    whoami,
    profiles,
    apply,
    delete,
    logs,
    quota,
    usage,
    bill,
    server,
    controller,
):
    cli.add_command(_command)
cli.add_command(contract_group, "contract")


def client(ctx: click.Context) -> Client:
    obj = ctx.obj or {}
    return Client(obj.get("url"), profile=obj.get("profile"))


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
    columns.append("isolation")
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
@click.option(
    "--rpm",
    type=click.IntRange(1, 1_000_000),
    help="requests per minute this key may send to /v1 (default: unlimited)",
)
@click.option(
    "--tpm",
    type=click.IntRange(1, 1_000_000_000),
    help="tokens (prompt + completion) per minute through /v1 (default: unlimited)",
)
@click.option("--save", is_flag=True, help="use this key for this CLI from now on")
@click.pass_context
def key_create(
    ctx: click.Context,
    tenant: str | None,
    role: str,
    name: str,
    rpm: int | None,
    tpm: int | None,
    save: bool,
) -> None:
    """Create an API key; it is shown once."""
    c = client(ctx)
    body = {"tenant": tenant, "role": role, "name": name}
    out = c.post("/api/v1/keys", {**body, "rate_limit_rpm": rpm, "rate_limit_tpm": tpm})
    click.echo(out["key"])
    if save:
        profile = Profile(tenant or role, c.url, out["key"], tenant, role)
        try:
            where = store_profile(profile)
        except ProfileConflict as exc:
            raise UsageError(f"the key was created but not saved: {exc}") from None
        click.echo(f"saved as profile {profile.name} in {where}", err=True)


@key.command("ls")
@click.option("--tenant")
@output_option
@click.pass_context
def key_ls(ctx: click.Context, tenant: str | None, output: str) -> None:
    """List keys (never their secrets)."""
    emit(
        client(ctx).get("/api/v1/keys", tenant=tenant),
        output,
        [
            "id",
            "tenant",
            "role",
            "name",
            "prefix",
            "rate_limit_rpm",
            "rate_limit_tpm",
            "revoked_at",
        ],
    )


@key.command("revoke")
@click.argument("key_id")
@click.pass_context
def key_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key."""
    client(ctx).delete(f"/api/v1/keys/{key_id}")
    click.echo(f"key {key_id} revoked")


# -- jobs ------------------------------------------------------------------------------------


@cli.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="include finished jobs")
@click.option("--tenant")
@click.option("--limit", default=50, show_default=True)
@output_option
@click.pass_context
def ps(ctx: click.Context, show_all: bool, tenant: str | None, limit: int, output: str) -> None:
    """List jobs, newest first."""
    states = None if show_all else list(LIVE_JOB_STATES)
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


@cli.command("models")
@click.option("--name")
@click.option("--tenant")
@output_option
@click.pass_context
def models(ctx: click.Context, name: str | None, tenant: str | None, output: str) -> None:
    """List models, every version, newest first (the same as `rainier model ls`)."""
    ctx.invoke(model_ls, name=name, tenant=tenant, output=output)


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
