"""Renders the VoiceAgentPool CustomResourceDefinition from the pydantic models.

Pure: models in, a plain dict out. ``voicefleet crd --write crds/`` saves it, and a test fails
when the checked-in file differs from what this builds.

pydantic emits JSON Schema with ``$ref``, ``title`` and ``anyOf [T, null]``; Kubernetes wants a
*structural* schema: every node typed, no references, no ``anyOf`` at the top of a property,
free-form objects marked ``x-kubernetes-preserve-unknown-fields``. :func:`structural` does that
conversion, and attaches each model's ``RULES`` as ``x-kubernetes-validations``.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

from pydantic import BaseModel

from voicefleet import constants
from voicefleet.api.model import ApiModel
from voicefleet.api.pool import VoiceAgentPool, VoiceAgentPoolSpec
from voicefleet.api.status import VoiceAgentPoolStatus

# JSON Schema keys a structural schema has no room for: titles, references' targets, and
# map key constraints (CEL rules check a map's keys instead).
_DROPPED_KEYS = frozenset({"title", "$defs", "propertyNames"})
# Marks, while converting, a property that is optional in the model (``T | None``): it gets
# no default, so an absent optional object stays absent (a default ``{}`` would trip the
# rules that read it, e.g. "set value or valueFrom").
_OPTIONAL = "x-voicefleet-optional"
_INT_OR_STRING = frozenset({"integer", "string"})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's type names: ``T``, ``T | None``, ``list[T]``, ``dict[K, T]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _rules_by_model() -> dict[str, list[dict[str, Any]]]:
    """``x-kubernetes-validations`` of each API model, keyed by its JSON Schema name."""
    out: dict[str, list[dict[str, Any]]] = {}
    pending: list[type[BaseModel]] = [VoiceAgentPoolSpec, VoiceAgentPoolStatus]
    seen: set[type[BaseModel]] = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        if issubclass(model, ApiModel) and model.RULES:
            out[model.__name__] = [rule.to_crd() for rule in model.RULES]
        for field in model.model_fields.values():
            pending.extend(_models_in(field.annotation))
    return out


def _int_or_string(branches: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``int | str`` (a Kubernetes quantity) in the one form a structural schema allows."""
    if {b.get("type") for b in branches} != _INT_OR_STRING or len(branches) != 2:
        return None
    out: dict[str, Any] = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    }
    for branch in branches:
        if "pattern" in branch:
            out["pattern"] = branch["pattern"]
    return out


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON Schema turned into a Kubernetes structural schema."""
    defs: dict[str, Any] = schema.get("$defs", {})
    rules = _rules_by_model()

    def convert(node: dict[str, Any], model_name: str | None = None) -> dict[str, Any]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            target = convert(defs[name], name)
            # Keep the description written on the field, not the one on the class; a
            # StrEnum field's default sits beside its reference (written first, as pydantic
            # writes them for an inline type).
            if "description" in node:
                target["description"] = node["description"]
            return {"default": node["default"], **target} if "default" in node else target
        if "anyOf" in node:
            # Optional[T]: the API server leaves the field out instead of storing null.
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            merged = _int_or_string(branches)
            if merged is None and len(branches) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {node}")
            if merged is None:
                merged = convert(branches[0])
            for key in ("description",):
                if key in node:
                    merged[key] = node[key]
            if node.get("default") is not None:
                merged["default"] = node["default"]
            if len(branches) < len(node["anyOf"]):
                merged[_OPTIONAL] = True
            return merged
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS:
                continue
            if key == "properties":
                out["properties"] = {k: convert(v) for k, v in value.items()}
            elif key == "items":
                out["items"] = convert(value)
            elif key == "additionalProperties":
                if value is True:
                    out["x-kubernetes-preserve-unknown-fields"] = True
                elif isinstance(value, dict):
                    out["additionalProperties"] = convert(value)
                # `false` is what a structural schema means anyway: unknown fields are pruned
                # or, with kubectl's default strict field validation, refused.
            else:
                out[key] = value
        if out.get("type") == "object" and "properties" in out:
            # Nested defaults apply only when the parent object exists; default each
            # sub-object so a minimal manifest gets every default filled in. The default is
            # written out in full, not as {}: the API server checks a default against the
            # CEL rules as written, and `{}` fails every rule that reads a field. Objects with
            # required fields (status.plan) and optional ones get no default.
            for prop in out["properties"].values():
                if (
                    prop.get("type") == "object"
                    and "properties" in prop
                    and "default" not in prop
                    and not prop.get("required")
                    and not prop.get(_OPTIONAL)
                ):
                    prop["default"] = expanded_default(prop)
            for prop in out["properties"].values():
                prop.pop(_OPTIONAL, None)
        for child in (out.get("items"), out.get("additionalProperties")):
            if isinstance(child, dict):
                child.pop(_OPTIONAL, None)
        if model_name in rules:
            out["x-kubernetes-validations"] = rules[model_name]
        return out

    return convert(schema, schema.get("title"))


def expanded_default(schema: dict[str, Any]) -> dict[str, Any]:
    """The value an empty object of ``schema`` takes once every nested default applied."""
    out: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        if "default" in prop:
            # A copy: a shared object would be written as a YAML anchor and alias.
            out[name] = copy.deepcopy(prop["default"])
    return out


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def printer_columns() -> list[dict[str, Any]]:
    """The columns of ``kubectl get voiceagentpools``, as in DESIGN.md."""

    def col(name: str, type_: str, path: str, description: str) -> dict[str, Any]:
        return {"name": name, "type": type_, "jsonPath": path, "description": description}

    return [
        col("Model", "string", ".spec.model.name", "Speech-to-speech model."),
        col("GPU", "string", ".status.plan.gpu", "GPU product planned for."),
        col("Sessions/Pod", "integer", ".status.plan.sessionsPerPod", "Conversations per pod."),
        col("Pods", "integer", ".status.replicas", "Pods that exist."),
        col("Ready", "integer", ".status.readyReplicas", "Pods ready for conversations."),
        col("Spot", "integer", ".status.spotReplicas", "Pods on spot nodes."),
        col("Active", "integer", ".status.sessions.active", "Live conversations."),
        col("Capacity", "integer", ".status.sessions.capacity", "Conversations ready pods hold."),
        col("$/Session-h", "number", ".status.plan.costPerSessionHour", "Cost per session-hour."),
        col("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
        # `kubectl get -o wide` only (priority 1).
        {
            **col("Moved", "integer", ".status.gateway.moved", "Conversations moved off pods."),
            "priority": 1,
        },
    ]


def build_crd() -> dict[str, Any]:
    """The VoiceAgentPool CRD as a plain dict (apiextensions.k8s.io/v1)."""
    spec_schema = _schema_of(VoiceAgentPoolSpec)
    spec_schema["description"] = VoiceAgentPoolSpec.__doc__
    status_schema = _schema_of(VoiceAgentPoolStatus)
    status_schema["description"] = VoiceAgentPoolStatus.__doc__
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": constants.CRD_NAME,
            "labels": {constants.LABEL_MANAGED_BY: constants.MANAGED_BY},
        },
        "spec": {
            "group": constants.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": constants.KIND,
                "listKind": f"{constants.KIND}List",
                "plural": constants.PLURAL,
                "singular": constants.SINGULAR,
                "shortNames": list(constants.SHORT_NAMES),
                "categories": ["voicefleet"],
            },
            "versions": [
                {
                    "name": constants.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.sessions.target",
                            "statusReplicasPath": ".status.sessions.capacity",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            # The pool's name bounds every name derived from it (names.py).
                            "x-kubernetes-validations": [
                                rule.to_crd() for rule in VoiceAgentPool.RULES
                            ],
                            "description": (
                                "A pool of GPU pods serving full-duplex speech-to-speech voice "
                                "agents, sized from a session target."
                            ),
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                # Declared so the name rules can blame metadata.name.
                                "metadata": {
                                    "type": "object",
                                    "properties": {"name": {"type": "string"}},
                                },
                                "spec": {**spec_schema, "default": expanded_default(spec_schema)},
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }
