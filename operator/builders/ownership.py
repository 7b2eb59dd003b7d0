"""Which objects are the pool's: the operator acts only on what it made itself.

An object is the pool's when an owner reference names the pool's UID. A name or a label
proves nothing: anyone who may create objects in the namespace can pick them, and an object
adopted on its name alone would be overwritten and then deleted with the pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicefleet.operator.builders.common import PoolRef


def owned_by(body: Mapping[str, Any], pool: PoolRef) -> bool:
    """True when ``body`` carries an owner reference to this very pool (its UID)."""
    references = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == pool.uid for ref in references)
