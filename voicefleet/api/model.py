"""The base of every API model: camelCase on the wire, unknown fields refused, rules checked.

Kept apart from ``pool.py`` so the template's models (``template.py``) and the pool's can
share it without importing each other.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from voicefleet.api.rules import Rule, RuleViolation
from voicefleet.naming import camel


class RuledModel(BaseModel):
    """A model whose ``RULES`` (CEL in the CRD) are checked in Python too, same words."""

    RULES: ClassVar[tuple[Rule[Any], ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> RuledModel:
        for rule in self.RULES:
            if rule.violated(self):
                raise RuleViolation(rule.message, rule.field_path)
        return self


class ApiModel(RuledModel):
    """Base of every API object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, unset optionals left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
