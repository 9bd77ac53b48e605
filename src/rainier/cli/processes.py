"""The long-running processes: `rainier server` (API, gateway and, by default, the controller)
and `rainier controller` (the controller alone, for a server run with
RAINIER_CONTROLLER=external)."""

from __future__ import annotations

import os

import click

from rainier.cli.client import UsageError


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@click.command()
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


@click.command()
def controller() -> None:
    """Run the controller (reconciler, deployment controller, metering) in the foreground.

    For a server started with RAINIER_CONTROLLER=external; both read the same environment
    (RAINIER_HOME, RAINIER_DATABASE_URL, RAINIER_HOST and RAINIER_PORT for the URL tasks call)."""
    import logging
    import os

    from rainier.config import ConfigError, Settings, check

    try:
        settings = Settings.from_env()
        check(settings)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    from rainier.control.process import run_controller

    logging.basicConfig(
        level=os.environ.get("RAINIER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    click.echo(f"rainier controller (home {settings.home})", err=True)
    run_controller(settings)
