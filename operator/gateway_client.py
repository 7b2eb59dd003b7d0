"""The one module that talks to a pool's gateway replicas: ``PUT /v1/backends``.

The body is the pool's runtime pods; it is signed with the pool token (never sent: see
``voicefleet.api.signature``). The answer is the gateway's ``GET /v1/status``, read with the
contract's model, so the same call tells the operator what the replica moved and cut. Every
failure is raised as :class:`GatewayCallError`, with the same short timeouts as the runtime
calls.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import aiohttp
from pydantic import ValidationError

from voicefleet import constants
from voicefleet.api import signature
from voicefleet.api.gateway import BackendsPush, GatewayStatus
from voicefleet.operator import metrics
from voicefleet.operator.pod_calls import PodHttp, base_url


class GatewayCallError(RuntimeError):
    """A gateway replica did not take the push: unreachable, refused or malformed answer."""


class GatewayClient(PodHttp):
    """Calls to gateway replicas; one connection pool for the operator's life."""

    async def push(self, pod_ip: str, token: str, backends: Sequence[str]) -> GatewayStatus:
        """Tell the replica at ``pod_ip`` the pool's runtime pods; its status."""
        url = base_url(pod_ip, self.port) + constants.PATH_BACKENDS
        body = BackendsPush(backends=list(backends)).model_dump_json(by_alias=True).encode()
        headers = {
            "Content-Type": "application/json",
            signature.HEADER: signature.sign(token, body, time.time()),
        }
        try:
            async with self._client().put(url, data=body, headers=headers) as response:
                text = await response.text()
                if response.status != 200:
                    raise GatewayCallError(f"gateway {pod_ip}: HTTP {response.status} {text[:200]}")
            status = GatewayStatus.model_validate_json(text)
        except (aiohttp.ClientError, TimeoutError, ValidationError) as exc:
            metrics.GATEWAY_PUSHES.labels("error").inc()
            raise GatewayCallError(f"gateway {pod_ip}: {type(exc).__name__}: {exc}") from exc
        except GatewayCallError:
            metrics.GATEWAY_PUSHES.labels("refused").inc()
            raise
        metrics.GATEWAY_PUSHES.labels("ok").inc()
        return status
