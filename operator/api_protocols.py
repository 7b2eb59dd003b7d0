"""The external services the operator's reconcile talks to, as protocols.

``kube.Kube`` (the Kubernetes API), ``runtime_client.RuntimeClient`` (the runtime pods) and
``gateway_client.GatewayClient`` (the pools' gateways) are the real implementations;
``tests/operator/fakes.py`` has in-memory ones, so the reconcile runs in the unit tier with
no cluster (KubeRay's fake-client tier). Only what the reconcile uses is here.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from voicefleet.api.gateway import GatewayStatus
from voicefleet.api.runtime import DrainResponse, RuntimeStatus


class KubeApi(Protocol):
    """The Kubernetes calls of the reconcile; errors are ``kube.KubeError``."""

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        labels: str | None = None,
        fields: str | None = None,
    ) -> builtins.list[dict[str, Any]]: ...

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply, conflicts forced."""

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create; None when an object of that name already exists."""

    async def replace(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """PUT, with the manifest's resourceVersion as the precondition."""

    async def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str = "",
    ) -> dict[str, Any] | None:
        """JSON merge patch; None when the object is gone."""

    async def json_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        operations: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        """JSON patch: all operations or none."""

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
        uid: str | None = None,
    ) -> bool:
        """Delete; False when it was already gone (or, with ``uid``, is another object)."""

    async def close(self) -> None: ...


class RuntimeApi(Protocol):
    """The calls to runtime pods; errors are ``runtime_client.RuntimeCallError``."""

    async def status(self, pod_ip: str) -> RuntimeStatus: ...

    async def drain(
        self, pod_ip: str, token: str, deadline_seconds: int, reason: str
    ) -> DrainResponse: ...

    async def close(self) -> None: ...


class GatewayApi(Protocol):
    """The calls to a pool's gateway replicas; errors are ``gateway_client.GatewayCallError``."""

    async def push(self, pod_ip: str, token: str, backends: Sequence[str]) -> GatewayStatus: ...

    async def close(self) -> None: ...
