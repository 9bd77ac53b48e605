"""Usage, contracts and bills: what was used and what it costs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rainier.cli.client import Client, UsageError
from rainier.cli.render import emit, table

output_option = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def client(ctx: click.Context) -> Client:
    obj = ctx.obj or {}
    return Client(obj.get("url"), profile=obj.get("profile"))


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


@click.command()
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


@click.group("contract")
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


@click.group(invoke_without_command=True)
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
