"""Sign-in (an API key exchanged for a sealed, expiring session cookie) and sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from rainier.web.client import Api, ApiFailure
from rainier.web.core import Changing, ConsoleRoute, console_of, form_of, render, same_origin
from rainier.web.session import COOKIE, SESSION_S

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _next(value: str | None) -> str:
    """Only a path of this site: a sign-in link cannot send anyone elsewhere."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", next=_next(next), message=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_of(request)
    target = _next(form.get("next"))
    key = form.get("key", "").strip()
    if not same_origin(request):
        return render(request, "login.html", 403, next=target, message="sign in from this site")
    if not key:
        return render(request, "login.html", 422, next=target, message="key: enter an API key")
    console = console_of(request)
    try:
        me = await Api(console.http, key).get("/api/v1/whoami")
    except ApiFailure as exc:
        return render(request, "login.html", exc.status, next=target, message=exc.message)
    if me["role"] == "job":
        return render(request, "login.html", 403, next=target, message="a job token cannot sign in")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        console.sealer.seal(key, me["role"], me["tenant"]),
        max_age=SESSION_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, session: Changing) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
