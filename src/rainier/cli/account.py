"""Who the CLI is: first start, logins into named profiles, and `whoami`."""

from __future__ import annotations

import json

import click

from rainier.cli.client import Client, UsageError
from rainier.cli.profiles import Credentials, Profile, ProfileConflict, mask, store_profile
from rainier.cli.render import table


def _ctx_client(ctx: click.Context, key: str | None = None) -> Client:
    obj = ctx.obj or {}
    return Client(obj.get("url"), key, profile=None if key else obj.get("profile"))


def _save(profile: Profile, force: bool) -> str:
    try:
        return str(store_profile(profile, force=force))
    except ProfileConflict as exc:
        raise UsageError(str(exc)) from None


@click.command()
@click.option("--profile", "profile_name", default="operator", show_default=True)
@click.pass_context
def init(ctx: click.Context, profile_name: str) -> None:
    """First start: create the operator key, print it once and save it for this CLI."""
    c = Client((ctx.obj or {}).get("url"), profile=None)
    out = c.post("/api/v1/init")
    path = _save(Profile(profile_name, c.url, out["key"], None, "operator"), force=False)
    click.echo(f"operator key (shown once): {out['key']}")
    click.echo(f"saved for this CLI in {path} (profile {profile_name})")


@click.command()
@click.argument("key")
@click.option(
    "--profile",
    "profile_name",
    help="save under this name (default: the key's tenant, or 'operator')",
)
@click.option("--force", is_flag=True, help="replace a different key saved under that name")
@click.pass_context
def login(ctx: click.Context, key: str, profile_name: str | None, force: bool) -> None:
    """Check an API key with the server and save it (with the URL) as a profile.

    Each key gets its own profile, so logging in as a tenant keeps the operator's key: switch
    with `rainier profiles use NAME`, `--profile NAME` or `RAINIER_PROFILE=NAME`."""
    c = _ctx_client(ctx, key)
    me = c.get("/api/v1/whoami")
    name = profile_name or me.get("tenant") or me["role"]
    path = _save(Profile(name, c.url, key, me.get("tenant"), me["role"]), force)
    who = f"{me['role']} of {me['tenant']}" if me.get("tenant") else me["role"]
    click.echo(f"logged in as {who}; profile {name} saved in {path}")


@click.command()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def whoami(ctx: click.Context, output: str) -> None:
    """The key this CLI sends: its role, tenant and profile, as the server sees them."""
    c = _ctx_client(ctx)
    me = c.get("/api/v1/whoami")
    me["profile"] = Credentials.load().selected_name((ctx.obj or {}).get("profile"))
    me["url"] = c.url
    if output == "json":
        click.echo(json.dumps(me, indent=2))
        return
    click.echo(
        f"role {me['role']}, tenant {me.get('tenant') or '-'}, key {me.get('key_prefix') or '-'}"
        f", profile {me['profile'] or '-'}, server {c.url}"
    )


@click.group(invoke_without_command=True)
@click.pass_context
def profiles(ctx: click.Context) -> None:
    """Saved logins; `*` marks the one commands use (see `profiles use`)."""
    if ctx.invoked_subcommand is not None:
        return
    creds = Credentials.load()
    current = creds.selected_name((ctx.obj or {}).get("profile"))
    rows = [
        {
            "": "*" if p.name == current else "",
            "name": p.name,
            "role": p.role or "",
            "tenant": p.tenant or "",
            "key": mask(p.key),
            "url": p.url,
        }
        for p in sorted(creds.profiles.values(), key=lambda p: p.name)
    ]
    if not rows:
        click.echo("no profiles yet: `rainier login KEY` saves one")
        return
    click.echo(table(rows, ["", "name", "role", "tenant", "key", "url"]))


@profiles.command("use")
@click.argument("name")
def profiles_use(name: str) -> None:
    """Make NAME the profile commands use from now on."""
    creds = Credentials.load()
    if name not in creds.profiles:
        known = ", ".join(sorted(creds.profiles)) or "none"
        raise UsageError(f"no profile {name!r} (saved: {known})")
    creds.current = name
    creds.save()
    click.echo(f"using profile {name}")


@profiles.command("rm")
@click.argument("name")
def profiles_rm(name: str) -> None:
    """Forget a saved profile (the key itself stays valid on the server)."""
    creds = Credentials.load()
    if creds.profiles.pop(name, None) is None:
        raise UsageError(f"no profile {name!r}")
    if creds.current == name:
        creds.current = None
    creds.save()
    click.echo(f"profile {name} removed")
