"""What every console page shares: templates, the signed-in session, CSRF checks, errors.

Pages are rendered on the server with autoescaping on, so whatever a user typed (a job name,
a log line, a model's answer) reaches the browser as text. A page handler raises `ApiFailure`
when the API refused something; `ConsoleRoute` shows the API's message with its status, and
anything unexpected as a plain 500 page that names no internals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape

from rainier.web import formats
from rainier.web.client import Api, ApiFailure
from rainier.web.session import COOKIE, Sealer, Session

log = logging.getLogger("rainier.web")
MAX_FORM_BYTES = 256 * 1024
# Scripts only from the package's own files: even markup that slipped past escaping runs nothing.
PAGE_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}

templates = Environment(
    loader=PackageLoader("rainier.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters.update(formats.FILTERS)


@dataclass
class Console:
    """The console's state, one per app: the sealing secret and the pool of API connections."""

    sealer: Sealer
    http: httpx.AsyncClient


class SignInNeeded(Exception):
    """No valid session (none, expired, tampered, or its key was revoked)."""


class PageRefused(Exception):
    """A request the console itself turns down (a missing CSRF token, a role's page)."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def signed_in(request: Request) -> Session:
    session = console_of(request).sealer.open(request.cookies.get(COOKIE))
    if session is None:
        raise SignInNeeded()
    request.state.session = session
    return session


Signed = Annotated[Session, Depends(signed_in)]


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form (the only kind the console posts), read once and kept."""
    cached: dict[str, str] | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PageRefused(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.state.form = form
    return form


def same_origin(request: Request) -> bool:
    """A browser names the page a request came from; one from another site is refused."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def changing(request: Request, session: Signed) -> Session:
    """A change (POST): the session's CSRF token must come back, from this very site."""
    token = request.headers.get("x-csrf-token") or (await form_of(request)).get("csrf")
    if not same_origin(request) or not console_of(request).sealer.csrf_ok(session, token):
        raise PageRefused(403, "the form is stale or came from another site: reload the page")
    return session


Changing = Annotated[Session, Depends(changing)]


def api(request: Request, session: Session) -> Api:
    return Api(console_of(request).http, session.key)


def require_role(session: Session, *roles: str) -> None:
    if session.role not in roles:
        raise PageRefused(
            403, f"this page is for the roles {', '.join(roles)}; you are {session.role}"
        )


def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    csrf = console_of(request).sealer.csrf_token(session) if session else ""
    html = templates.get_template(name).render(
        request=request, session=session, csrf=csrf, path=request.url.path, **values
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _error_page(request: Request, status: int, message: str) -> Response:
    fragment = request.headers.get("hx-request") == "true"
    page = "error_fragment.html" if fragment else "error.html"
    response = render(request, page, status, code=status, message=message)
    if fragment:  # htmx swaps 2xx only: show the error where the fragment would have gone
        response.headers["hx-reswap"] = "innerHTML"
        response.status_code = 200 if status < 500 else status
    return response


def sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.headers.get("hx-request") == "true":
        response: Response = Response(status_code=204, headers={"hx-redirect": "/login"})
    else:
        response = RedirectResponse(f"/login?next={_safe_next(target)}", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _safe_next(target: str) -> str:
    from urllib.parse import quote

    return quote(target if target.startswith("/") and not target.startswith("//") else "/")


class ConsoleRoute(APIRoute):
    """Turns what a page raises into what a person should see."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                return sign_in_redirect(request)
            except ApiFailure as exc:
                if exc.status == 401:
                    return sign_in_redirect(request)
                return _error_page(request, exc.status, exc.message)
            except PageRefused as exc:
                return _error_page(request, exc.status, exc.message)
            except Exception:
                log.exception("console page %s failed", request.url.path)
                return _error_page(request, 500, "something went wrong on the server")

        return guarded
