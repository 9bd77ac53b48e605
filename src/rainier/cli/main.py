"""`rainier`: the command line over the control plane's HTTP API."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import click

from rainier import __version__
from rainier.cli.account import init, login, profiles, whoami
from rainier.cli.client import Client, UsageError
from rainier.cli.documents import apply, delete, load_documents
from rainier.cli.logs import logs
from rainier.cli.plans import quota
from rainier.cli.profiles import Profile, ProfileConflict, store_profile
from rainier.cli.render import emit, table

TERMINAL = ("succeeded", "failed", "stopped")

output_option = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


class LazyGroup(click.Group):
    """Subcommands with heavy imports (the simulator) load only when they are called; the
    group's help lists them from `lazy_help` without importing them."""

    lazy: dict[str, str] = {  # noqa: RUF012
        "sim": "rainier.sim.cli:sim",
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


for _command in (init, login, whoami, profiles, apply, delete, logs, quota):
    cli.add_command(_command)


def client(ctx: click.Context) -> Client:
    obj = ctx.obj or {}
    return Client(obj.get("url"), profile=obj.get("profile"))


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@cli.command()
@click.option(
    "--host", envvar="RAINIER_HOST", default=_env("RAINIER_HOST", "127.0.0.1"), show_default=True
)
@click.option(
    "--port",
    envvar="RAINIER_PORT",
    default=_env("RAINIER_PORT", "8000"),
    show_default=True,
    type=click.IntRange(0, 65535),
)
@click.option(
    "--workers",
    envvar="RAINIER_WORKERS",
    default=_env("RAINIER_WORKERS", "1"),
    show_default=True,
    type=click.IntRange(1, 64),
)
def server(host: str, port: int, workers: int) -> None:
    """Run the control plane (API, gateway, reconciler) in the foreground.

    Defaults shown are this environment's (RAINIER_HOST, RAINIER_PORT, RAINIER_WORKERS)."""
    from rainier.config import ConfigError, Settings, check

    try:
        settings = Settings.from_env(host=host, port=port)
        check(settings)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    from rainier.api.app import serve
    from rainier.control.sandbox import describe

    click.echo(f"rainier control plane on http://{host}:{port} (home {settings.home})", err=True)
    click.echo(describe(settings.isolation), err=True)
    serve(settings, workers)


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


def fetch(c: Client, path: str, **params: Any) -> bytes:
    """A GET answered with a file (CSV, PNG) rather than JSON; API errors become CLI errors."""
    import httpx

    try:
        r = c.http.get(path, params={k: v for k, v in params.items() if v is not None})
    except httpx.TransportError as exc:
        raise c.unreachable(exc) from None
    if r.status_code >= 400:
        try:
            message = r.json().get("message") or r.text
        except ValueError:
            message = r.text
        if r.status_code in (400, 404, 409, 422):
            raise UsageError(str(message))
        raise click.ClickException(f"{r.status_code}: {message}")
    return r.content


def write_out(data: bytes, path: str) -> None:
    if path == "-":
        click.echo(data.decode(), nl=False)
    else:
        Path(path).write_bytes(data)
        click.echo(f"wrote {path}", err=True)


@cli.command()
@click.option("--tenant", help="default: the key's own tenant (an operator's: every tenant)")
@click.option("--since", help="date or ISO time (UTC), inclusive")
@click.option("--until", help="date or ISO time (UTC), exclusive")
@click.option(
    "--by", type=click.Choice(["flavor", "job", "day", "model", "kind"]), default="flavor"
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@click.pass_context
def usage(
    ctx: click.Context,
    tenant: str | None,
    since: str | None,
    until: str | None,
    by: str,
    output: str,
) -> None:
    """Chip-seconds and tokens used, and what they cost, grouped by flavor, job or day."""
    c = client(ctx)
    params = {"tenant": tenant, "since": since, "until": until, "by": by}
    if output == "csv":
        write_out(fetch(c, "/api/v1/usage", **params, format="csv"), "-")
        return
    data = c.get("/api/v1/usage", **params)
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    rows = [
        {by: g["group"], "unit": g["unit"], "quantity": g["quantity"], "usd": g["amount_usd"]}
        for g in data["groups"]
    ]
    click.echo(table(rows, [by, "unit", "quantity", "usd"]))
    click.echo(f"total {data['total_usd']} USD")


@cli.group("contract")
def contract_group() -> None:
    """Tenants' commitments (create or update them with `apply -f`)."""


@contract_group.command("ls")
@output_option
@click.pass_context
def contract_ls(ctx: click.Context, output: str) -> None:
    """List contracts: term and committed spend."""
    data = client(ctx).get("/api/v1/contracts")
    emit(data, output, ["name", "tenant", "term_start", "term_end", "committed_usd"])


def status_text(d: dict[str, Any]) -> str:
    committed, spent = float(d["committed_usd"]), float(d["spent_usd"])
    pct = f" ({100 * spent / committed:.1f}%)" if committed > 0 else ""
    if d["reached_at"]:
        reach = f"reached {d['reached_at']}"
    elif d["projected_reach_at"]:
        reach = f"projected to be reached {d['projected_reach_at']}"
    else:
        reach = "not reached at the current burn rate"
    return "\n".join(
        [
            f"contract {d['contract']} of {d['tenant']}: {d['term_start']} .. {d['term_end']}",
            f"committed   {committed:,.2f} USD",
            f"spent       {spent:,.6f} USD{pct}",
            f"remaining   {float(d['remaining_usd']):,.6f} USD",
            f"burn rate   {float(d['burn_usd_per_day']):,.6f} USD/day",
            f"commitment  {reach}",
            f"at term end {float(d['projected_spend_at_end_usd']):,.2f} USD projected, "
            f"shortfall {float(d['projected_shortfall_usd']):,.2f} USD",
        ]
    )


@contract_group.command("status")
@click.argument("name")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def contract_status(ctx: click.Context, name: str, output: str) -> None:
    """Committed vs spent, burn rate, when the commitment is reached, shortfall at term end."""
    data = client(ctx).get(f"/api/v1/contracts/{name}/status")
    click.echo(json.dumps(data, indent=2) if output == "json" else status_text(data))


def statement_text(st: dict[str, Any]) -> str:
    rows = [
        {
            "kind": g["kind"],
            "sku": g["sku"],
            "quantity": g["quantity"],
            "unit": g["unit"],
            "usd": g["amount_usd"],
            "lines": g["lines"],
        }
        for g in st["groups"]
    ]
    parts = [
        f"bill of contract {st['contract']} ({st['tenant']}) for {st['month']}",
        table(rows, ["kind", "sku", "quantity", "unit", "usd", "lines"]) if rows else "no usage",
        f"total {st['total_usd']} USD over {st['line_count']} lines; "
        f"invoice total {st['invoice_total_usd']} USD",
        f"commitment {st['committed_usd']} USD: drawn before {st['drawn_before_usd']}, "
        f"this month {st['drawn_in_period_usd']}, remaining {st['remaining_usd']} USD",
    ]
    for cov in st["coverage"]:
        parts.append(
            f"guarantee {cov['flavor']}: {cov['reserved_chip_s']} chip-s reserved, "
            f"{cov['used_chip_s']} used ({cov['within_guarantee_chip_s']} within), "
            f"{cov['unused_chip_s']} unused"
        )
    return "\n".join(parts)


@cli.group(invoke_without_command=True)
@click.option("--contract", help="the contract to bill")
@click.option("--month", help="YYYY-MM (default: this month)")
@click.option("-o", "--output", help="write the month's lines as CSV to this file (- = stdout)")
@click.option("--json", "as_json", is_flag=True, help="the statement as JSON")
@click.pass_context
def bill(
    ctx: click.Context, contract: str | None, month: str | None, output: str | None, as_json: bool
) -> None:
    """A contract's monthly statement; `bill export` writes FOCUS CSV."""
    if ctx.invoked_subcommand is not None:
        return
    if contract is None:
        raise UsageError("--contract is required (see `rainier contract ls`)")
    c = client(ctx)
    path = f"/api/v1/contracts/{contract}/statement"
    if output is not None:
        write_out(fetch(c, path, month=month, format="csv"), output)
        return
    st = c.get(path, month=month)
    click.echo(json.dumps(st, indent=2) if as_json else statement_text(st))


@bill.command("export")
@click.option(
    "--focus",
    is_flag=True,
    default=True,
    show_default=True,
    help="FinOps FOCUS 1.0 columns (the only format, so the default)",
)
@click.option("--contract")
@click.option("--tenant")
@click.option("--since", help="date or ISO time (UTC), inclusive")
@click.option("--until", help="date or ISO time (UTC), exclusive")
@click.option("-o", "--output", default="-", show_default=True, help="file, or - for stdout")
@click.pass_context
def bill_export(
    ctx: click.Context,
    focus: bool,
    contract: str | None,
    tenant: str | None,
    since: str | None,
    until: str | None,
    output: str,
) -> None:
    """Every ledger line (yours, or all for an operator) as FOCUS CSV."""
    data = fetch(
        client(ctx),
        "/api/v1/billing/focus",
        contract=contract,
        tenant=tenant,
        since=since,
        until=until,
    )
    write_out(data, output)


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
