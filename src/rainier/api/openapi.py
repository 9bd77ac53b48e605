"""The OpenAPI document as the API behaves: every error an operation can answer, the content
types it answers in, the bearer key it needs, and the gateway's `/v1` routes, which are plain
Starlette routes (for speed) that the framework would leave out.

The rules are by path and method rather than per route, so that a route added later is
documented the same way: every `/api/v1` operation needs a key (401, 403), may name what the
caller cannot see (404) and validates its input (422); those with a body may find it unreadable
(400) or too large (413); writes may conflict (409). `/v1` errors are OpenAI's shape.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from rainier.api.routers.usage import StatementOut, UsageOut
from rainier.api.schemas import ErrorOut

REST_ERRORS = {
    400: "the body is not readable JSON",
    401: "no key, or a key that is not valid (revoked, or a token whose job ended)",
    403: "the key's role may not do this",
    404: "no such object, or one the caller may not see",
    409: "conflicts with what exists",
    413: "the body is larger than the limit",
    422: "a field is wrong; `problems` says which and why",
}
GATEWAY_ERRORS = {
    400: "the body is not a valid request",
    401: "no key, or a key that is not a tenant's",
    404: "no such model (deployment) in the tenant",
    413: "the body is larger than the limit",
    429: "a rate limit is reached",
    503: "no replica is ready, or none could be reached",
    504: "the replica took too long",
}
CSV = {"text/csv": {"schema": {"type": "string"}}}
PROMETHEUS = {"text/plain": {"schema": {"type": "string"}}}
PNG = {"image/png": {"schema": {"type": "string", "format": "binary"}}}


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorBody


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class _Sampling(_Open):
    model: str = Field(min_length=1, description="a deployment of the caller's tenant")
    max_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: Usage | None = None


class Completion(_Open):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str | None


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def _errors(codes: dict[int, str], schema: str) -> dict[str, Any]:
    return {str(c): {"description": d, "content": _json(schema)} for c, d in codes.items()}


def _gateway_paths() -> dict[str, Any]:
    def post(request: str, answer: str, summary: str) -> dict[str, Any]:
        return {
            "post": {
                "tags": ["gateway"],
                "summary": summary,
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": _json(request)},
                "responses": {
                    "200": {
                        "description": "the answer; with `stream`, server-sent events",
                        "content": {
                            **_json(answer),
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(GATEWAY_ERRORS, "OpenAIError"),
                },
            }
        }

    return {
        "/v1/chat/completions": post("ChatCompletionRequest", "ChatCompletion", "Chat"),
        "/v1/completions": post("CompletionRequest", "Completion", "Complete a prompt"),
    }


def _rest_errors(path: str, method: str, operation: dict[str, Any]) -> dict[int, str]:
    if not path.startswith("/api/v1/"):
        return {}
    codes = {401, 403, 404, 422} if path != "/api/v1/init" else {409}
    if method in ("post", "delete") and path != "/api/v1/init":
        codes.add(409)
    if "requestBody" in operation or method == "post":
        codes |= {400, 413}
    return {c: REST_ERRORS[c] for c in sorted(codes)}


def _document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    requests: list[type[BaseModel]] = [ChatCompletionRequest, CompletionRequest]
    answers: list[type[BaseModel]] = [ErrorOut, OpenAIError, ChatCompletion, Completion]
    answers += [ModelList, UsageOut, StatementOut]
    for model in requests:
        schemas.update(_schemas_of(model))
    for model in answers:
        schemas.update(_schemas_of(model, "serialization"))
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    doc["paths"].update(_gateway_paths())
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            if path.startswith("/v1/"):
                responses.pop("422", None)
                responses.update(_errors({400: GATEWAY_ERRORS[400]}, "OpenAIError"))
                responses.update(_errors({401: GATEWAY_ERRORS[401]}, "OpenAIError"))
                if path.startswith("/v1/models/"):
                    responses.update(_errors({404: GATEWAY_ERRORS[404]}, "OpenAIError"))
                operation.setdefault("security", [{"bearer": []}])
                continue
            if path.startswith("/api/v1/") and path != "/api/v1/init":
                operation.setdefault("security", [{"bearer": []}])
            responses.pop("422", None)
            responses.update(_errors(_rest_errors(path, method, operation), "ErrorOut"))
            _content_types(path, method, responses)
    return doc


# Creations that answer 200 instead: a retried submission (same Idempotency-Key) answers the
# job it made first, and applying a deployment that exists updates it.
ALSO_200 = ("/api/v1/jobs", "/api/v1/deployments")


def _content_types(path: str, method: str, responses: dict[str, Any]) -> None:
    if method == "post" and path in ALSO_200 and "201" in responses:
        responses["200"] = {**responses["201"], "description": "an existing one, as it is now"}
    ok = responses.get("200") or responses.get("201")
    if ok is None:
        return
    if path == "/metrics":
        ok["content"] = PROMETHEUS
    elif path.endswith("/burndown.png"):
        ok["content"] = PNG
    elif path == "/api/v1/billing/focus":
        ok["content"] = CSV
    elif path == "/api/v1/usage":
        ok["content"] = {**_json("UsageOut"), **CSV}
    elif path == "/api/v1/contracts/{name}/statement":
        ok["content"] = {**_json("StatementOut"), **CSV}
    elif path == "/v1/models":
        ok["content"] = _json("ModelList")
    elif path == "/v1/models/{name}":
        ok["content"] = _json("ModelCard")


def _schemas_of(
    model: type[BaseModel], mode: Literal["validation", "serialization"] = "validation"
) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    defs = schema.pop("$defs", {})
    return {model.__name__: schema, **defs}


def install(app: FastAPI) -> None:
    """Makes `app.openapi()` answer the document above (built once, on first ask)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
