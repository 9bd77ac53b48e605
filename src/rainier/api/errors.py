"""Errors a user can cause, answered with what is wrong and where."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from rainier.spec import DOCUMENT_MODELS, SpecError
from rainier.spec_hints import friendly


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        self.status, self.message, self.field = status, message, field
        super().__init__(message)


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


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        body: dict[str, Any] = {"message": exc.message}
        if exc.field:
            body["problems"] = [{"field": exc.field, "message": exc.message}]
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(SpecError)
    async def _spec_error(_: Request, exc: SpecError) -> JSONResponse:
        return JSONResponse(_problems_body(exc.problems), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        body = exc.body if isinstance(exc.body, dict) else {}
        model = DOCUMENT_MODELS.get(body.get("kind"))
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            if loc and loc[0] in ("Node", "Tenant", "Contract", "Job", "Deployment"):
                loc = loc[1:]
            message = friendly(dict(err), model, loc) or str(err.get("msg", "invalid"))
            problems.append((".".join(loc), message.removeprefix("Value error, ")))
        return JSONResponse(_problems_body(problems), status_code=422)
