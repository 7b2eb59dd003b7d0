"""Which objects are the pool's: the operator acts only on what it made itself.

An object is the pool's when an owner reference names the pool's UID. A name or a label
proves nothing: anyone who may create objects in the namespace can pick them, and an object
adopted on its name alone would be overwritten and then deleted with the pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicefleet.operator.builders.common import PoolRef
from voicefleet.operator.builders.pdb import pdb_name
from voicefleet.operator.builders.secret import secret_name
from voicefleet.operator.builders.services import headless_service_name, service_name


def owned_by(body: Mapping[str, Any], pool: PoolRef) -> bool:
    """True when ``body`` carries an owner reference to this very pool (its UID)."""
    references = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == pool.uid for ref in references)


def owned_object_names(pool: PoolRef) -> list[tuple[str, str]]:
    """(kind, name) of every object the pool has besides its pods."""
    return [
        ("Secret", secret_name(pool)),
        ("Service", service_name(pool)),
        ("Service", headless_service_name(pool)),
        ("PodDisruptionBudget", pdb_name(pool)),
    ]
