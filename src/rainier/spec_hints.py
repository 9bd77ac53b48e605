"""Validation messages in the words of the person who wrote the document.

pydantic says `String should match pattern '^[a-z0-9]...'` and `Extra inputs are not
permitted`; a user needs to know what a valid name looks like, and that `flavour` is spelled
`flavor`. These hints rewrite a pydantic error into such a sentence; `spec` calls them.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from rainier.limits import NAME_PATTERN

NAME_RULE = (
    "must be 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The document model inside an annotation (`X`, `X | None`), if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def fields_at(model: type[BaseModel], path: list[str]) -> list[str]:
    """The field names a mapping at `path` (the parent of the offending key) may hold."""
    for part in path:
        info = model.model_fields.get(part)
        inner = _model_of(info.annotation) if info is not None else None
        if inner is None:
            return []
        model = inner
    return [name for name in model.model_fields if name != "kind"]


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def friendly(err: dict[str, Any], model: type[BaseModel] | None, loc: list[str]) -> str | None:
    """A better message for one pydantic error, or None to keep pydantic's."""
    kind = err.get("type")
    if kind == "extra_forbidden" and loc:
        known = fields_at(model, loc[:-1]) if model is not None else []
        hint = did_you_mean(loc[-1], known)
        if not hint and known:
            hint = f"; known fields: {', '.join(known)}"
        return f"unknown field {loc[-1]!r}{hint}"
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        if pattern == NAME_PATTERN:
            return f"{err.get('input')!r} is not a valid name: it {NAME_RULE}"
    return None


def problems(exc: ValidationError, model: type[BaseModel], kind: str) -> list[tuple[str, str]]:
    """Each error of a document of `kind` as (field path, message), friendly where it can be."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == kind:
            loc = loc[1:]
        msg = friendly(dict(err), model, loc) or err["msg"].removeprefix("Value error, ")
        out.append((".".join(loc), msg))
    return out
