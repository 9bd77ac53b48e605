"""The web console: what a tenant and an operator see in a browser, served at `/`.

Pages are rendered on the server (Jinja2, autoescaped) and refreshed in place by htmx, which
ships in `static/` (no CDN; `scripts/vendor-htmx.sh` refreshes it from the npm registry at a
pinned, checked version). Every page asks the REST API, over HTTP, with the key its user
signed in with: the console can show and do exactly what that key can, and nothing reads the
database on the console's own path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from rainier.config import Settings
from rainier.web import pages_auth, pages_jobs, pages_operator, pages_serving, pages_tenant
from rainier.web.client import new_http
from rainier.web.core import Console
from rainier.web.session import Sealer, load_secret

STATIC = Path(__file__).parent / "static"


def mount(app: FastAPI, settings: Settings) -> None:
    """Adds the console's pages and assets to the API's app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.console.http.aclose()

    app.state.console = Console(Sealer(load_secret(settings.home)), new_http(settings))
    app.mount("/static", StaticFiles(directory=STATIC), name="console-static")
    closing = APIRouter(lifespan=lifespan, include_in_schema=False)
    app.include_router(closing)
    for module in (pages_auth, pages_tenant, pages_jobs, pages_serving, pages_operator):
        app.include_router(module.router)
