"""Errors a user can cause, answered with what is wrong and where."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rainier.api.edge import allowed_methods, error_body, is_gateway
from rainier.services.errors import Refused
from rainier.spec import DOCUMENT_MODELS, SpecError
from rainier.spec_hints import friendly

log = logging.getLogger("rainier.api")


class ApiError(Refused):
    """A refusal the API itself decides (who may see what, a query's bounds)."""


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, f"{what} {name!r} not found")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def conflict(message: str) -> ApiError:
    return ApiError(409, message)


def _problems_body(problems: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "message": "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in problems),
        "problems": [{"field": loc, "message": msg} for loc, msg in problems],
    }


def _shaped(request: Request, status: int, body: dict[str, Any]) -> JSONResponse:
    """`body` as it is, or in OpenAI's error shape under the gateway's `/v1`."""
    if is_gateway(request.url.path):
        problems = body.get("problems") or [{}]
        shaped = error_body(request.url.path, status, body["message"])
        shaped["error"]["param"] = problems[0].get("field") or None
        body = shaped
    return JSONResponse(body, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def _api_error(request: Request, exc: Refused) -> JSONResponse:
        body: dict[str, Any] = {"message": exc.message}
        if exc.field:
            body["problems"] = [{"field": exc.field, "message": exc.message}]
        return _shaped(request, exc.status, body)

    @app.exception_handler(SpecError)
    async def _spec_error(request: Request, exc: SpecError) -> JSONResponse:
        return _shaped(request, 422, _problems_body(exc.problems))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        """Routing's own answers (no such path, a method the path does not take) and the
        framework's (an unreadable body), in the API's shape."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        message = {404: "not found", 405: f"{request.method} is not allowed here"}.get(
            exc.status_code, str(exc.detail)
        )
        response = _shaped(request, exc.status_code, {"message": message})
        response.headers.update(headers)
        return response

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _shaped(request, 500, {"message": "internal error"})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = exc.body if isinstance(exc.body, dict) else {}
        kind = body.get("kind")
        model = DOCUMENT_MODELS.get(kind) if isinstance(kind, str) else None
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            if loc and loc[0] in ("Node", "Tenant", "Contract", "Job", "Deployment"):
                loc = loc[1:]
            message = friendly(dict(err), model, loc) or str(err.get("msg", "invalid"))
            problems.append((".".join(loc), message.removeprefix("Value error, ")))
        return _shaped(request, 422, _problems_body(problems))
