"""The one module that talks to runtime pods: ``GET /v1/status`` and ``POST /v1/drain``.

Short timeouts (a pod that does not answer in a second is reported unreachable, and the
reconcile carries on with what it knows); every failure, time-out, refusal or malformed
answer, is raised as :class:`RuntimeCallError`, so callers handle one exception type
(dask-kubernetes' ``SchedulerCommError`` habit). The JSON is read with the contract's own
models from ``voicefleet.api.runtime``.
"""

from __future__ import annotations

import aiohttp
from pydantic import ValidationError

from voicefleet import constants
from voicefleet.api.runtime import DrainRequest, DrainResponse, RuntimeStatus
from voicefleet.operator import metrics
from voicefleet.operator.pod_calls import PodHttp, base_url


class RuntimeCallError(RuntimeError):
    """A runtime pod did not answer as the contract says: unreachable, timed out, refused
    (``status`` is the HTTP status, 0 when nothing answered) or malformed."""

    def __init__(self, address: str, status: int, message: str) -> None:
        super().__init__(f"runtime {address}: {message}")
        self.address = address
        self.status = status


class RuntimeClient(PodHttp):
    """Calls to runtime pods; one connection pool for the operator's life."""

    async def status(self, pod_ip: str) -> RuntimeStatus:
        url = base_url(pod_ip, self.port) + constants.PATH_STATUS
        try:
            async with self._client().get(url) as response:
                text = await response.text()
                if response.status != 200:
                    raise RuntimeCallError(pod_ip, response.status, text[:200])
            return RuntimeStatus.model_validate_json(text)
        except (aiohttp.ClientError, TimeoutError, ValidationError) as exc:
            metrics.RUNTIME_POLL_FAILURES.inc()
            raise RuntimeCallError(pod_ip, 0, f"{type(exc).__name__}: {exc}") from exc
        except RuntimeCallError:
            metrics.RUNTIME_POLL_FAILURES.inc()
            raise

    async def drain(
        self, pod_ip: str, token: str, deadline_seconds: int, reason: str
    ) -> DrainResponse:
        """Start (or tighten) the pod's drain. Idempotent on the runtime's side."""
        url = base_url(pod_ip, self.port) + constants.PATH_DRAIN
        body = DrainRequest(deadline_seconds=deadline_seconds, reason=reason[:256]).wire()
        try:
            async with self._client().post(
                url, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                text = await response.text()
                if response.status != 200:
                    metrics.DRAIN_CALLS.labels(str(response.status)).inc()
                    raise RuntimeCallError(pod_ip, response.status, text[:200])
            result = DrainResponse.model_validate_json(text)
        except (aiohttp.ClientError, TimeoutError, ValidationError) as exc:
            metrics.DRAIN_CALLS.labels("error").inc()
            raise RuntimeCallError(pod_ip, 0, f"{type(exc).__name__}: {exc}") from exc
        metrics.DRAIN_CALLS.labels("ok").inc()
        return result
