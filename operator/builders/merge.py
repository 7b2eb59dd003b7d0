"""``spec.template`` laid over the pod the operator builds: a small strategic merge.

Kubernetes' strategic merge knows, per field, whether a list is keyed (containers by
``name``) or replaced. We need only the pod fields users override, so the keyed lists are
named here; every other list in the override replaces the built one, and dicts merge
recursively. Tolerations add to the built ones (a user adds a taint to tolerate, never
means to drop the capacity-type ones), and required node-selector terms are combined with
the built ones (a user narrows where the pods go, never undoes the spot/on-demand split).

Only what ``template.allowed_overrides`` kept ever reaches this merge.
"""

from __future__ import annotations

import copy
from typing import Any, Final

# list field -> the key that identifies an item
KEYED_LISTS: Final[dict[str, str]] = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
APPENDED_LISTS: Final = frozenset({"tolerations", "topologySpreadConstraints"})
NODE_SELECTOR_TERMS: Final = "nodeSelectorTerms"
TERM_LISTS: Final = ("matchExpressions", "matchFields")


def merge(base: Any, override: Any, field: str = "") -> Any:
    """``override`` merged over ``base``; neither is modified."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for key, value in override.items():
            out[key] = merge(base[key], value, key) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(override, list):
        if field in APPENDED_LISTS:
            return copy.deepcopy(base) + [v for v in copy.deepcopy(override) if v not in base]
        if field == NODE_SELECTOR_TERMS:
            return _and_terms(base, override)
        key = KEYED_LISTS.get(field)
        if key is not None:
            return _merge_keyed(base, override, key, field)
    return copy.deepcopy(override)


def _merge_keyed(base: list[Any], override: list[Any], key: str, field: str) -> list[Any]:
    out = copy.deepcopy(base)
    index = {item.get(key): i for i, item in enumerate(out) if isinstance(item, dict)}
    for item in override:
        ident = item.get(key) if isinstance(item, dict) else None
        if ident is not None and ident in index:
            out[index[ident]] = merge(out[index[ident]], item, field)
        else:
            out.append(copy.deepcopy(item))
    return out


def _and_terms(base: list[Any], override: list[Any]) -> list[Any]:
    """Terms that hold where a built term and an override term both hold.

    Node-selector terms are ORed and the requirements of one term ANDed, so "both" is every
    pair of terms, joined.
    """
    if not base or not override:
        return copy.deepcopy(base or override)
    return [
        {
            key: [*copy.deepcopy(b.get(key) or []), *copy.deepcopy(o.get(key) or [])]
            for key in TERM_LISTS
            if b.get(key) or o.get(key)
        }
        for b in base
        for o in override
    ]
