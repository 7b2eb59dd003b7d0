"""The key pool tokens are made from: one Secret in the operator's own namespace.

A pool's token is an HMAC of the pool's UID under this key (``builders.secret``), so the
operator can compute any pool's token without reading Secrets in pool namespaces. Replicas
share the key: the first to start makes it, the others read it.
"""

from __future__ import annotations

import base64
import secrets
from typing import Final

from voicefleet import constants
from voicefleet.operator.api_protocols import KubeApi
from voicefleet.operator.kube import KubeError

KEY_BYTES: Final = 32


async def load_or_create_key(kube: KubeApi, namespace: str) -> bytes:
    """The HMAC key of pool tokens, from the operator's namespace; made once if absent."""
    name = constants.OPERATOR_KEY_SECRET
    for _ in range(3):
        found = await kube.get("Secret", namespace, name)
        if found is not None:
            return base64.b64decode(found["data"][constants.POOL_TOKEN_KEY])
        fresh = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()
        created = await kube.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": "Opaque",
                "data": {constants.POOL_TOKEN_KEY: fresh},
            }
        )
        if created is not None:
            return base64.b64decode(fresh)
        # Another replica created it first: read theirs.
    raise KubeError(409, "Conflict", f"could not read or create {namespace}/{name}")
