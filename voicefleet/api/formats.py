"""Kubernetes' formats, and the rules on keys, shared by the models of ``spec.template``.

Each check exists twice with one meaning: a CEL expression for the CRD (the API server) and
a Python function (``voicefleet plan``, the operator), and both give the same message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Final

from pydantic import Field, StringConstraints, WithJsonSchema

from voicefleet import constants
from voicefleet.api.model import ApiModel
from voicefleet.api.rules import Rule

# --- formats, as Kubernetes validates them (apimachinery's validation package) -------------

# A qualified name: an optional DNS-subdomain prefix and '/', then a name of at most 63.
QUALIFIED_NAME_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QUALIFIED_NAME_MAX: Final = 253 + 1 + 63
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
ENV_NAME_PATTERN: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"

# --- keys a template's labels and annotations may not use -----------------------------------

# The operator's own: it selects its pods by them, drains by them and hashes them.
OPERATOR_KEY_PATTERN: Final = r"^([a-z0-9.-]*[.])?voicefleet[.]dev/"
OPERATOR_KEYS: Final = (constants.LABEL_MANAGED_BY,)
# Kubernetes' reserved prefixes: components act on these keys (AppArmor's annotations
# loosen confinement), and we cannot vouch for what a future one does.
KUBERNETES_KEY_PATTERN: Final = r"^([a-z0-9.-]*[.])?(kubernetes[.]io|k8s[.]io)/"
# ... except the recommended app labels, and the cluster autoscaler's eviction hint.
KUBERNETES_ALLOWED_PATTERN: Final = r"^app[.]kubernetes[.]io/"
KUBERNETES_ALLOWED_KEYS: Final = ("cluster-autoscaler.kubernetes.io/safe-to-evict",)

MAX_LABELS: Final = 64
MAX_ANNOTATIONS: Final = 64
MAX_LIST: Final = 32
REFUSED: Final = "Refused: "

LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
ObjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
]
Key = Annotated[str, StringConstraints(min_length=1, max_length=QUALIFIED_NAME_MAX)]
# What a refused field holds: an object whose contents the schema leaves undeclared, so the
# API server prunes them and keeps nothing but the field's presence, which a rule refuses.
# (Kept contents, x-kubernetes-preserve-unknown-fields, would also defeat validation
# ratcheting: a pool stored before the upgrade could then get no status written.)
Opaque = Annotated[dict[str, Any], WithJsonSchema({"type": "object"})]
Quantity = int | Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY_PATTERN)]


def _cel_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def is_qualified_name(key: str) -> bool:
    return len(key) <= QUALIFIED_NAME_MAX and re.match(QUALIFIED_NAME_PATTERN, key) is not None


def is_operator_key(key: str) -> bool:
    """A label or annotation key the operator sets or reads."""
    return re.match(OPERATOR_KEY_PATTERN, key) is not None or key in OPERATOR_KEYS


def is_kubernetes_key(key: str) -> bool:
    """A key under Kubernetes' reserved prefixes that a template may not set."""
    return (
        re.match(KUBERNETES_KEY_PATTERN, key) is not None
        and re.match(KUBERNETES_ALLOWED_PATTERN, key) is None
        and key not in KUBERNETES_ALLOWED_KEYS
    )


def is_reserved_key(key: str) -> bool:
    return is_operator_key(key) or is_kubernetes_key(key)


# The same three checks in CEL, for a map key bound to `k`.
_CEL_QUALIFIED = f"size(k) <= {QUALIFIED_NAME_MAX} && k.matches('{QUALIFIED_NAME_PATTERN}')"
_CEL_NOT_OPERATOR = f"!k.matches('{OPERATOR_KEY_PATTERN}') && !(k in {_cel_list(OPERATOR_KEYS)})"
_CEL_NOT_KUBERNETES = (
    f"!k.matches('{KUBERNETES_KEY_PATTERN}') || k.matches('{KUBERNETES_ALLOWED_PATTERN}') "
    f"|| k in {_cel_list(KUBERNETES_ALLOWED_KEYS)}"
)


def _map_rule(
    wire: str, attr: str, cel_ok: str, ok: Callable[[str], bool], message: str
) -> Rule[Any]:
    """A rule that every key of the optional map field ``wire`` passes ``cel_ok``."""

    def violated(model: Any) -> bool:
        keys: Mapping[str, Any] = getattr(model, attr) or {}
        return not all(ok(k) for k in keys)

    return Rule(
        cel=f"!has(self.{wire}) || self.{wire}.all(k, {cel_ok})",
        message=message,
        violated=violated,
        field_path=f".{wire}",
    )


def key_format_rule(wire: str, attr: str) -> Rule[Any]:
    return _map_rule(
        wire,
        attr,
        _CEL_QUALIFIED,
        is_qualified_name,
        f"{wire} keys must be qualified names: an optional DNS prefix and '/', then at most "
        "63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    )


def reserved_key_rules(wire: str, attr: str) -> tuple[Rule[Any], ...]:
    return (
        key_format_rule(wire, attr),
        _map_rule(
            wire,
            attr,
            _CEL_NOT_OPERATOR,
            lambda k: not is_operator_key(k),
            f"{wire} under voicefleet.dev/ and {constants.LABEL_MANAGED_BY} are the "
            "operator's (it selects, drains and hashes its pods by them): remove them",
        ),
        _map_rule(
            wire,
            attr,
            _CEL_NOT_KUBERNETES,
            lambda k: not is_kubernetes_key(k),
            f"{wire} under kubernetes.io/ and k8s.io/ are reserved for Kubernetes, whose "
            "components act on them (AppArmor annotations loosen confinement): remove them; "
            "app.kubernetes.io/ keys and " + ", ".join(KUBERNETES_ALLOWED_KEYS) + " are allowed",
        ),
    )


def refused(why: str) -> Any:
    """A field the template may not set; ``why`` is the message the rule gives."""
    return Field(default=None, description=REFUSED + why)


def refusal_rules(model: type[ApiModel]) -> tuple[Rule[Any], ...]:
    """One rule per field declared with :func:`refused`: present means refused."""
    rules: list[Rule[Any]] = []
    for attr, field in model.model_fields.items():
        description = field.description or ""
        if not description.startswith(REFUSED):
            continue
        wire = field.alias or attr

        def violated(m: Any, a: str = attr) -> bool:
            return getattr(m, a) is not None

        rules.append(
            Rule(
                cel=f"!has(self.{wire})",
                message=f"{wire} may not be set in a pool's template: "
                + description.removeprefix(REFUSED),
                violated=violated,
                field_path=f".{wire}",
            )
        )
    return tuple(rules)
