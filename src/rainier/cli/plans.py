"""`apply --dry-run` answers and `rainier quota`: what a job would do, where quota stands."""

from __future__ import annotations

import json
from typing import Any

import click

from rainier.cli.client import Client
from rainier.cli.render import table

VERDICTS = {
    "runs-now": "would run now",
    "reserved": "would wait for a reservation",
    "preempting": "would start once preempted work stops",
    "waits": "would wait for free chips",
    "over-borrow-limit": "would wait: over the borrow limit",
    "not-preemptible": "would wait: not preemptible, so only inside the guarantee",
    "never-fits": "can never run",
}


def _usd(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.2f} USD"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def plan_text(name: str, p: dict[str, Any]) -> str:
    verdict = VERDICTS.get(p["outcome"], p["outcome"])
    if p["nodes"]:
        verdict += f" on {', '.join(p['nodes'])}"
    if p.get("reservation_at"):
        verdict += f" at {p['reservation_at'][:19].replace('T', ' ')} UTC"
    lines = [
        f"job {name} (dry run, nothing submitted): {verdict}",
        f"  why:       {p['reason']}",
        f"  chips:     {p['chips']} {p['flavor']}: {p['guaranteed_chips']} guaranteed, "
        f"{p['borrowed_chips']} borrowed"
        + (" (preemptible when their owners reclaim them)" if p["borrowed_chips"] else ""),
    ]
    if p["usd_per_hour"] is not None:
        where = f"contract {p['contract']}" if p["contract"] else "list price, no contract"
        discount = float(p["discount"] or 0)
        lines.append(
            f"  price:     {_usd(p['usd_per_hour'])}/hour at {where}'s rate "
            f"({float(p['list_usd_per_chip_hour']):.2f} USD/chip-hour list"
            + (f", {discount:.0%} off" if discount else "")
            + ")"
        )
    if p["estimated_total_usd"] is not None:
        lines.append(
            f"  estimate:  {_usd(p['estimated_total_usd'])} at most "
            f"(max_duration_s {_duration(float(p['max_duration_s']))})"
        )
    if p.get("preempts"):
        lines.append(f"  preempts:  {', '.join(p['preempts'])}")
    return "\n".join(lines)


@click.command()
@click.option("--tenant", help="default: the key's own tenant (an operator's: every tenant)")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def quota(ctx: click.Context, tenant: str | None, output: str) -> None:
    """Per contract and flavor: chips guaranteed, in use, borrowed, borrowable now; the
    commitment's spend, what remains and when it runs out at the current burn."""
    obj = ctx.obj or {}
    data = Client(obj.get("url"), profile=obj.get("profile")).get("/api/v1/quota", tenant=tenant)
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    if not data["items"]:
        click.echo("no contract in force")
        return
    rows = [
        {
            **r,
            "guaranteed": r["guaranteed_chips"],
            "in_use": r["in_use_chips"],
            "borrowed": r["borrowed_chips"],
            "limit": "unlimited" if r["borrow_limit_chips"] is None else r["borrow_limit_chips"],
            "borrowable": r["borrowable_now_chips"],
            "spent": f"{float(r['spent_usd']):,.2f}",
            "remaining": f"{float(r['remaining_usd']):,.2f}",
            "runs_out": (r["runs_out_at"] or "not at this burn")[:10],
        }
        for r in data["items"]
    ]
    columns = ["contract", "tenant", "flavor", "guaranteed", "in_use", "borrowed", "limit"]
    columns += ["borrowable", "spent", "remaining", "runs_out"]
    click.echo(table(rows, columns))
