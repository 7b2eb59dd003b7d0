"""Cross-field validation rules, written once and enforced in two places.

Each :class:`Rule` carries a CEL expression for the CRD's ``x-kubernetes-validations`` (so the
API server rejects a bad VoiceAgentPool) and a Python check with the same meaning (so
``voicefleet plan`` rejects it offline). Both produce the same message text, so a user sees the
same words from ``kubectl apply`` and from ``voicefleet plan``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Rule(Generic[M]):
    """One cross-field rule on one object of the schema."""

    cel: str
    """CEL, evaluated by the API server with ``self`` bound to the object."""
    message: str
    """The words the API server and the planner both print when the rule fails."""
    violated: Callable[[M], bool]
    """The same rule in Python: true when the object breaks it."""
    field_path: str | None = None
    """Optional JSON path (relative to the object) of the field to blame, e.g. ``.variant``."""

    def to_crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class RuleViolation(ValueError):
    """Raised by a model validator; pydantic turns it into a validation error at the object.

    ``field_path`` (e.g. ``.variant``) says which field of that object the error blames, as
    the API server does with a rule's ``fieldPath``.
    """

    def __init__(self, message: str, field_path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field_path = field_path
