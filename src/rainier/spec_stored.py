"""Documents as the store keeps them (their JSON dumps), read back as their `spec` models."""

from __future__ import annotations

import typing
from typing import Any, TypeVar

from pydantic import ValidationError

from rainier.spec import STORED_CONTEXT, Document

StoredDoc = TypeVar("StoredDoc", bound=Document)


def load_stored(model: type[StoredDoc], data: Any) -> StoredDoc:
    """A document as the store keeps it (its JSON dump), back as the model it was validated
    as: times and money come back from their text forms, and a flavor the operator has since
    removed does not make work already accepted unreadable.

    A row stored before a bound held (or written around the API) may break today's bounds:
    it comes back with its values as stored, unchecked, so that what uses them (the
    scheduler, the executor) refuses that one row with the reason rather than every pass of
    the control plane failing on it."""
    try:
        return model.model_validate(data, strict=False, context=STORED_CONTEXT)
    except ValidationError:
        return _unchecked(model, data)


def _unchecked(model: type[StoredDoc], data: Any) -> StoredDoc:
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = name if name in data else info.alias
        if key is None or key not in data:
            continue
        value = data[key]
        nested = _document_in(info.annotation)
        if nested is not None and isinstance(value, dict):
            value = _unchecked(nested, value)
        values[name] = value
    return typing.cast(StoredDoc, model.model_construct(**values))


def _document_in(annotation: Any) -> type[Document] | None:
    """The document type a field holds, alone or as `X | None`."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Document):
            return candidate
    return None
