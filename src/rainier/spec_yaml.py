"""Documents from YAML text: every document of a multi-document file, and errors that name the
file, the line and the field, so a user finds the mistake in what they wrote."""

from __future__ import annotations

import yaml
from pydantic import BaseModel

from rainier.spec import SpecError, validate_document


def parse_yaml(text: str, source: str = "<document>") -> list[BaseModel]:
    """All documents of a (multi-document) YAML text; errors carry `source:line: field`."""
    try:
        nodes = list(yaml.compose_all(text))
        datas = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise SpecError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    docs: list[BaseModel] = []
    problems: list[tuple[str, str]] = []
    for node, data in zip(nodes, datas, strict=True):
        if data is None:
            continue
        try:
            docs.append(validate_document(data))
        except SpecError as exc:
            for loc, msg in exc.problems:
                line = _line_of(node, loc.split(".") if loc else [])
                problems.append((f"{source}:{line}: {loc}" if loc else f"{source}:{line}", msg))
    if problems:
        raise SpecError(problems)
    return docs


def _line_of(node: yaml.Node | None, path: list[str]) -> int:
    """The 1-based line of the deepest YAML node on `path` that exists."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            return line
        line = node.start_mark.line + 1
    return line
