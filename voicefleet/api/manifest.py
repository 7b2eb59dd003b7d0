"""Reading VoiceAgentPool manifests from YAML, with errors in the API server's words.

``kubectl apply`` of a bad pool answers e.g. ``spec.capacity.spotPercentage: Invalid value:
150: spec.capacity.spotPercentage in body should be less than or equal to 100``. The planner
validates with pydantic; :func:`describe` renders pydantic's errors in the same shape, so a
user sees one vocabulary from both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from voicefleet import constants
from voicefleet.api.pool import VoiceAgentPool
from voicefleet.api.rules import RuleViolation


class ManifestError(ValueError):
    """A document that is not a valid VoiceAgentPool; ``problems`` are one line each."""

    def __init__(self, name: str, problems: list[str]) -> None:
        super().__init__(f"{name}: " + "; ".join(problems))
        self.name = name
        self.problems = problems


@dataclass(frozen=True)
class Document:
    """One YAML document of a manifest file, with its position for messages."""

    index: int
    body: dict[str, Any]

    @property
    def is_pool(self) -> bool:
        return (
            self.body.get("kind") == constants.KIND
            and str(self.body.get("apiVersion", "")).split("/")[0] == constants.GROUP
        )

    @property
    def label(self) -> str:
        name = (self.body.get("metadata") or {}).get("name", "?")
        return f"{self.body.get('kind', '?')}/{name} (document {self.index + 1})"


def documents(text: str, origin: str) -> Iterator[Document]:
    """Every mapping document of a (multi-document) YAML text."""
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ManifestError(origin, [f"not valid YAML: {exc}"]) from exc
    for index, body in enumerate(loaded):
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ManifestError(origin, [f"document {index + 1} is not a mapping"])
        yield Document(index=index, body=body)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe(error: ErrorDetails, prefix: tuple[str, ...] = ()) -> str:
    """One pydantic error as the API server would phrase it; ``prefix`` is the path of the
    validated object in the manifest (``("spec",)`` when only the spec was validated)."""
    # A rule (CEL) failure is reported on the object the rule sits on.
    loc = (*prefix, *(p for p in error["loc"] if not str(p).startswith("function-")))
    path = _path(loc)
    kind = error["type"]
    ctx = error.get("ctx", {})
    given = _value(error.get("input"))
    invalid = f"{path}: Invalid value: {given}: {path} in body"
    if kind == "missing":
        return f"{path}: Required value"
    if kind == "extra_forbidden":
        parent, _, field = path.rpartition(".")
        return f'{parent or "<root>"}: unknown field "{field}"'
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "").replace("'", '"').replace(" or ", ", ")
        return f"{path}: Unsupported value: {given}: supported values: {expected}"
    if kind in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
        words = {
            "less_than_equal": ("less than or equal to", "le"),
            "greater_than_equal": ("greater than or equal to", "ge"),
            "less_than": ("less than", "lt"),
            "greater_than": ("greater than", "gt"),
        }[kind]
        return (
            f"{path}: Invalid value: {given}: {path} in body should be {words[0]} {ctx[words[1]]}"
        )
    if kind == "string_pattern_mismatch":
        return f"{invalid} should match '{ctx['pattern']}'"
    if kind == "too_long":
        most = ctx.get("max_length")
        items = "item" if most == 1 else "items"
        return f"{path}: Too many: {ctx.get('actual_length')}: must have at most {most} {items}"
    if kind in ("string_too_short", "string_too_long"):
        bound = "at least" if kind == "string_too_short" else "at most"
        limit = ctx.get("min_length", ctx.get("max_length"))
        return (
            f"{path}: Invalid value: {given}: {path} in body should be {bound} {limit} chars long"
        )
    if kind == "value_error" and isinstance(ctx.get("error"), RuleViolation):
        # The message is the CRD rule's message, word for word, blamed on the rule's field;
        # the API server names the type of the object the rule sits on: always an object.
        violation: RuleViolation = ctx["error"]
        for part in (violation.field_path or "").strip(".").split("."):
            if part:
                path = f"{path}.{part}" if path else part
        return f'{path}: Invalid value: "object": {violation.message}'
    if kind.endswith("_type") or kind.endswith("_parsing"):
        wanted = kind.removesuffix("_parsing").removesuffix("_type")
        wanted = {"int": "integer", "float": "number", "str": "string", "dict": "object"}.get(
            wanted, wanted
        )
        return f"{invalid} must be of type {wanted}"
    return f"{path}: Invalid value: {given}: {error['msg']}"


def parse_pool(document: Document) -> VoiceAgentPool:
    """The document as a VoiceAgentPool, or :class:`ManifestError` listing every problem."""
    try:
        return VoiceAgentPool.model_validate(document.body)
    except ValidationError as exc:
        raise ManifestError(document.label, [describe(e) for e in exc.errors()]) from exc
