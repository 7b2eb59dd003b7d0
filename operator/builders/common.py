"""What every builder shares: the pool's identity, labels, owner references, hashes.

Pure: plain dicts in, plain dicts out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from voicefleet import constants


@dataclass(frozen=True)
class PoolRef:
    """The identity of one VoiceAgentPool, as the builders need it."""

    name: str
    namespace: str
    uid: str
    generation: int = 0

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> PoolRef:
        meta = body.get("metadata") or {}
        return cls(
            name=str(meta["name"]),
            namespace=str(meta["namespace"]),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def selector_labels(pool: PoolRef) -> dict[str, str]:
    """Labels that select the pool's runtime pods (Services, PDB, the scale selector)."""
    return {constants.LABEL_POOL: pool.name, constants.LABEL_COMPONENT: constants.COMPONENT_RUNTIME}


def selector_string(pool: PoolRef) -> str:
    """``status.selector``: the label selector in its string form, as `kubectl` parses it."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(pool).items()))


def common_labels(pool: PoolRef) -> dict[str, str]:
    return {constants.LABEL_POOL: pool.name, constants.LABEL_MANAGED_BY: constants.MANAGED_BY}


def owner_reference(pool: PoolRef) -> dict[str, Any]:
    """The pool as controller of an object, so deleting the pool garbage-collects it."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(pool: PoolRef, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": pool.namespace,
        "labels": {**common_labels(pool), **(labels or {})},
        "ownerReferences": [owner_reference(pool)],
    }


def content_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (sorted keys): equal content, equal hash."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_applied_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with the hash of its own content in an annotation.

    The reconcile step compares this annotation with the live object's and skips the apply
    when they match: a second reconcile of an unchanged pool makes no write call.
    """
    digest = content_hash(manifest)
    meta = dict(manifest["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), constants.ANNOTATION_APPLIED_HASH: digest}
    return {**manifest, "metadata": meta}
