"""The pool token Secret: the bearer token the operator sends with ``POST /v1/drain``.

The token is derived, never stored by the operator: HMAC-SHA256 of the pool's UID with a
key kept in the operator's own namespace. So the operator can compute any pool's token
without reading Secrets in pool namespaces (it may only create and apply them there), and
a recreated pool (new UID) gets a new token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from voicefleet import constants
from voicefleet.operator.builders.common import PoolRef, metadata, with_applied_hash


def pool_token(key: bytes, pool: PoolRef) -> str:
    """The pool's token: hex HMAC-SHA256 of its UID under the operator's key."""
    return hmac.new(key, pool.uid.encode(), hashlib.sha256).hexdigest()


def secret_name(pool: PoolRef) -> str:
    return pool.name + constants.SUFFIX_TOKEN_SECRET


def build_secret(pool: PoolRef, token: str) -> dict[str, Any]:
    """The Secret mounted into every pod of the pool (key ``token``)."""
    encoded = base64.b64encode(token.encode()).decode()
    return with_applied_hash(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata(pool, secret_name(pool)),
            "type": "Opaque",
            "data": {constants.POOL_TOKEN_KEY: encoded},
        }
    )
