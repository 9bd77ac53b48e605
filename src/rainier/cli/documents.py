"""`apply` and `delete`: documents from files, folders or stdin, checked whole before any is sent."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from rainier.cli.client import Client, UsageError
from rainier.cli.plans import plan_text

KIND_PATHS = {
    "Node": "/api/v1/nodes",
    "Tenant": "/api/v1/tenants",
    "Contract": "/api/v1/contracts",
    "Job": "/api/v1/jobs",
    "Deployment": "/api/v1/deployments",
    "Flavor": "/api/v1/flavors",
}
# Applied in this order, so a folder may hold a tenant and its contract in any files.
KIND_ORDER = ("Flavor", "Node", "Tenant", "Contract", "Deployment", "Job")
SUFFIXES = (".yaml", ".yml", ".json")


def document_files(path: str) -> list[str]:
    """`path` itself, or a folder's YAML/JSON files (recursively, in name order)."""
    if path == "-":
        return ["-"]
    p = Path(path)
    if p.is_dir():
        found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
        if not found:
            raise UsageError(f"{path}: no {', '.join(SUFFIXES)} files in this folder")
        return found
    return [path]


def load_documents(paths: tuple[str, ...] | list[str] | str) -> list[dict[str, Any]]:
    """Validates every document of every file before anything is sent: a bad one changes
    nothing. Documents come back in `KIND_ORDER`, each kind in file order."""
    from rainier.spec import SpecError
    from rainier.spec_yaml import parse_yaml

    if isinstance(paths, str):
        paths = [paths]
    docs: list[Any] = []
    problems: list[str] = []
    for path in [f for p in paths for f in document_files(p)]:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
        try:
            docs += parse_yaml(text, source="<stdin>" if path == "-" else path)
        except SpecError as exc:
            problems += [f"{loc}: {msg}" for loc, msg in exc.problems]
    if problems:
        raise UsageError("invalid document:\n  " + "\n  ".join(problems))
    if not docs:
        raise UsageError(f"{', '.join(paths)}: no documents")
    dumped = [d.model_dump(mode="json", exclude_none=False) for d in docs]
    return sorted(dumped, key=lambda d: KIND_ORDER.index(d["kind"]))


def _client(ctx: click.Context) -> Client:
    obj = ctx.obj or {}
    return Client(obj.get("url"), profile=obj.get("profile"))


files_option = click.option(
    "-f",
    "--file",
    "paths",
    multiple=True,
    required=True,
    help="a YAML file, a folder of them, or - for stdin (repeatable)",
)


@click.command()
@files_option
@click.option("--dry-run", is_flag=True, help="check and plan only: where jobs would run, price")
@click.option("--replace", is_flag=True, help="stop a live job of the same name and run this one")
@click.option("--backdate", is_flag=True, help="sign contracts whose term began in the past")
@click.pass_context
def apply(
    ctx: click.Context, paths: tuple[str, ...], dry_run: bool, replace: bool, backdate: bool
) -> None:
    """Create or update what the documents describe (Node, Tenant, Contract, Job, Deployment).

    A second job of a live (pending or running) job's name is refused unless --replace.
    A job that no set of nodes can ever hold is refused with the reason."""
    docs = load_documents(paths)
    c = _client(ctx)
    for doc in docs:
        kind = doc["kind"]
        if kind == "Contract" and backdate:
            doc["backdate"] = True
        if dry_run:
            _dry_run(c, doc)
            continue
        if kind == "Job":
            out = c.post(KIND_PATHS[kind], doc, idempotent=True, replace=replace or None)
            click.echo(f"job {out['id']} submitted ({out['name']})")
            continue
        out = c.post(KIND_PATHS[kind], doc)
        click.echo(f"{kind.lower()} {out.get('name')} applied")
        if out.get("note"):
            click.echo(f"  backdated: {out['note']}")


def _dry_run(c: Client, doc: dict[str, Any]) -> None:
    kind = doc["kind"]
    if kind != "Job":
        start = (doc.get("term") or {}).get("start")
        if kind == "Contract" and start and _past(start) and not doc.get("backdate"):
            click.echo(f"contract {doc['name']}: term starts in the past; needs --backdate")
        else:
            click.echo(f"{kind.lower()} {doc['name']}: valid (dry run, nothing applied)")
        return
    plan = c.post("/api/v1/plans", doc)
    click.echo(plan_text(doc["name"], plan))
    if plan["outcome"] == "never-fits":
        raise UsageError(f"job {doc['name']} would be refused: {plan['reason']}")


def _past(value: str) -> bool:
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at < datetime.now(UTC)


@click.command()
@files_option
@click.pass_context
def delete(ctx: click.Context, paths: tuple[str, ...]) -> None:
    """Remove what the documents name: stop jobs, delete deployments and nodes.

    Tenants and contracts are kept (the ledger refers to them); naming one is an error,
    found before anything is removed."""
    docs = list(reversed(load_documents(paths)))
    kept = [d for d in docs if d["kind"] in ("Tenant", "Contract")]
    if kept:
        d = kept[0]
        raise UsageError(
            f"{d['kind'].lower()} {d['name']}: {d['kind'].lower()}s cannot be deleted "
            "(usage and bills refer to them); nothing was deleted"
        )
    c = _client(ctx)
    for doc in docs:
        name, tenant = doc["name"], doc.get("tenant")
        if doc["kind"] == "Job":
            out = c.post(f"/api/v1/jobs/{name}/stop")
            click.echo(f"job {out['id']} ({name}): {out['state']}")
        elif doc["kind"] == "Deployment":
            c.delete(f"/api/v1/deployments/{name}", tenant=tenant)
            click.echo(f"deployment {name} deleted")
        else:
            c.delete(f"/api/v1/nodes/{name}")
            click.echo(f"node {name} removed")
