"""``spec.template`` once more at the door: only the allowlist reaches a pod.

The API server already refuses everything else (the CRD generated from
``voicefleet/api/template.py``). But a pool can reach the operator without that check: one
stored before the CRD was upgraded (``helm upgrade`` never upgrades CRDs), one written
through a CRD that never was, or a stored field that a ratcheting update carried along. So
the builder keeps, from the template's wire form, only:

- ``metadata.labels`` and ``metadata.annotations``, without the operator's keys and
  Kubernetes' reserved ones;
- the scheduling fields, ``imagePullSecrets``, and for the ``runtime`` container its
  ``resources`` (without the GPU) and ``env`` (without the pool token's variable).

Everything the operator owns (namespace, name, owners, ServiceAccount, security context,
host namespaces, ``nodeName``, volumes, other containers) is simply never copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from voicefleet import constants
from voicefleet.api.formats import is_reserved_key

METADATA_FIELDS: Final = ("labels", "annotations")
SPEC_FIELDS: Final = (
    "nodeSelector",
    "affinity",
    "tolerations",
    "topologySpreadConstraints",
    "priorityClassName",
    "runtimeClassName",
    "imagePullSecrets",
)
RESOURCE_FIELDS: Final = ("requests", "limits")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _string_map(value: Any) -> dict[str, str]:
    """Labels or annotations without reserved keys (and without anything not a string)."""
    return {
        k: v
        for k, v in _mapping(value).items()
        if isinstance(k, str) and isinstance(v, str) and not is_reserved_key(k)
    }


def _container(value: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": constants.RUNTIME_CONTAINER}
    resources = _mapping(value.get("resources"))
    kept = {
        field: {
            k: v for k, v in _mapping(resources.get(field)).items() if k != constants.RESOURCE_GPU
        }
        for field in RESOURCE_FIELDS
    }
    kept = {field: values for field, values in kept.items() if values}
    if kept:
        out["resources"] = kept
    env = [
        e
        for e in value.get("env") or []
        if isinstance(e, Mapping) and e.get("name") != constants.ENV_POOL_TOKEN
    ]
    if env:
        out["env"] = env
    return out


def allowed_overrides(template: Mapping[str, Any]) -> dict[str, Any]:
    """``{"metadata": ..., "spec": ...}``: what of ``template`` may be laid over a pod."""
    meta_in, spec_in = _mapping(template.get("metadata")), _mapping(template.get("spec"))
    metadata = {f: _string_map(meta_in.get(f)) for f in METADATA_FIELDS}
    metadata = {f: values for f, values in metadata.items() if values}
    spec = {f: spec_in[f] for f in SPEC_FIELDS if f in spec_in}
    containers = [
        _container(c)
        for c in spec_in.get("containers") or []
        if isinstance(c, Mapping) and c.get("name") == constants.RUNTIME_CONTAINER
    ]
    if containers:
        spec["containers"] = containers[:1]
    return {"metadata": metadata, "spec": spec}
