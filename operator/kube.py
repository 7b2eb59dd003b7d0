"""The one module that calls the Kubernetes API (besides kopf's own watches).

Async, over aiohttp, so a node signal never waits behind a blocking call. Credentials come
from the same places as kubectl's (``KUBECONFIG``, ``~/.kube/config``, or the in-cluster
ServiceAccount), read once through the ``kubernetes`` package's loaders.

Writes are counted (``voicefleet_operator_api_writes_total``) so the "a second reconcile
makes no write calls" invariant is observable from outside. Server-side apply always uses
one field manager, ``constants.FIELD_MANAGER``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes import client, config

from voicefleet import constants
from voicefleet.operator import metrics

APPLY_CONTENT_TYPE: Final = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE: Final = "application/merge-patch+json"
JSON_PATCH_CONTENT_TYPE: Final = "application/json-patch+json"
REQUEST_TIMEOUT_SECONDS: Final = 10.0
NAMESPACE_IN_PATH: Final = re.compile(r"/namespaces/([^/]+)/")
IN_CLUSTER_TOKEN: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"
TOKEN_REREAD_SECONDS: Final = 60.0
# Answers worth asking again at once (client-go retries these too). Time-outs are not retried
# here: the API server is then not answering at all, and each try waits the full time-out.
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
RETRIES: Final = 3
RETRY_FIRST_SECONDS: Final = 0.1
# A node reaction must not wait long: a longer Retry-After is cut to this.
RETRY_AFTER_CAP_SECONDS: Final = 2.0

# kind -> (API path prefix, plural, namespaced)
KINDS: Final[dict[str, tuple[str, str, bool]]] = {
    "Pod": ("/api/v1", "pods", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Event": ("/api/v1", "events", True),
    "Node": ("/api/v1", "nodes", False),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    # Leader election among the operator's replicas (operator/leader.py).
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    constants.KIND: (f"/apis/{constants.API_VERSION}", constants.PLURAL, True),
}


class KubeError(RuntimeError):
    """An API call that failed: HTTP status (0 when the server did not answer) and reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def transient(self) -> bool:
        """The API server did not answer, was overloaded or failed: worth retrying as is
        (a 4xx refusal, by contrast, needs the request or the cluster to change)."""
        return self.status in {0, 429} or self.status >= 500

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: nothing new may be created there."""
        return self.status == 403 and "being terminated" in self.message


def path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    prefix, plural, namespaced = KINDS[kind]
    out = prefix
    if namespaced and namespace is not None:
        out += f"/namespaces/{quote(namespace)}"
    out += f"/{plural}"
    if name is not None:
        out += f"/{quote(name)}"
    return out


def _retry_delay(attempt: int, retry_after: str | None) -> float:
    """Seconds before retry number ``attempt + 1``: the server's Retry-After when it gave
    one (capped), else a short exponential back-off with jitter."""
    if retry_after is not None and retry_after.isdigit():
        return min(float(retry_after), RETRY_AFTER_CAP_SECONDS)
    return float(RETRY_FIRST_SECONDS * 2**attempt * random.uniform(1.0, 1.5))


@dataclass(frozen=True)
class Credentials:
    server: str
    ssl_context: ssl.SSLContext | bool
    headers: Mapping[str, str]
    # In a pod: the projected ServiceAccount token, which the kubelet rotates; re-read.
    token_file: str | None = None


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """Kubeconfig (``KUBECONFIG`` or the given file) first, then the in-cluster account."""
    cfg = client.Configuration()
    token_file = None
    try:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    except config.ConfigException:
        config.load_incluster_config(client_configuration=cfg)
        token_file = IN_CLUSTER_TOKEN
    # verify_ssl false only where the kubeconfig says insecure-skip-tls-verify.
    context: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else False
    )
    if isinstance(context, ssl.SSLContext) and cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    headers: dict[str, str] = {}
    token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
    if token:
        headers["Authorization"] = token if " " in token else f"Bearer {token}"
    return Credentials(
        server=str(cfg.host).rstrip("/"),
        ssl_context=context,
        headers=headers,
        token_file=token_file,
    )


class Kube:
    """JSON calls to the API server; one aiohttp session for the operator's life."""

    def __init__(
        self, credentials: Credentials, *, timeout: float = REQUEST_TIMEOUT_SECONDS
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._token_read = 0.0
        self._auth: dict[str, str] = {}

    def _auth_headers(self) -> dict[str, str]:
        """The Authorization header; a rotated in-cluster token is picked up within 60 s."""
        path = self.credentials.token_file
        if path is None:
            return {}
        if time.monotonic() - self._token_read > TOKEN_REREAD_SECONDS:
            with open(path, encoding="utf-8") as handle:
                self._auth = {"Authorization": f"Bearer {handle.read().strip()}"}
            self._token_read = time.monotonic()
        return self._auth

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=None,
                headers=dict(self.credentials.headers),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=self.credentials.ssl_context, limit=64),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        kind: str = "",
    ) -> Any:
        url = self.credentials.server + url_path
        if params:
            url += "?" + urlencode(params)
        data = json.dumps(body) if body is not None else None
        write = method != "GET"
        headers = {"Content-Type": content_type}
        for attempt in range(RETRIES + 1):
            status, text, retry_after = await self._send(method, url, data, headers)
            if status not in RETRY_STATUSES or attempt == RETRIES:
                break
            # Overloaded (429, with its Retry-After) or failing for a moment (5xx): wait a
            # little and ask again, as client-go does; longer trouble is the caller's (the
            # pool's ticker retries the whole pass).
            metrics.API_RETRIES.labels(str(status)).inc()
            await asyncio.sleep(_retry_delay(attempt, retry_after))
        if write:
            found = NAMESPACE_IN_PATH.search(url_path)
            namespace = found.group(1) if found else ""
            metrics.API_WRITES.labels(method, kind or "-", namespace).inc()
        if status >= 400:
            reason, message = "", text[:500]
            try:
                parsed = json.loads(text)
                reason, message = parsed.get("reason", ""), parsed.get("message", message)
            except ValueError:
                pass
            raise KubeError(status, reason, message)
        return json.loads(text) if text else None

    async def _send(
        self, method: str, url: str, data: str | None, headers: Mapping[str, str]
    ) -> tuple[int, str, str | None]:
        """One HTTP exchange: (status, body, Retry-After header)."""
        started = time.monotonic()
        try:
            async with self._client().request(
                method, url, data=data, headers={**headers, **self._auth_headers()}
            ) as response:
                return response.status, await response.text(), response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, type(exc).__name__, str(exc) or url) from exc
        finally:
            metrics.API_SECONDS.labels(method).observe(time.monotonic() - started)

    # --- reads ---------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            result: dict[str, Any] = await self.request("GET", path(kind, namespace, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        return result

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        labels: str | None = None,
        fields: str | None = None,
    ) -> list[dict[str, Any]]:
        params = {}
        if labels:
            params["labelSelector"] = labels
        if fields:
            params["fieldSelector"] = fields
        result = await self.request("GET", path(kind, namespace), params=params)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    # --- writes --------------------------------------------------------------------------

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply with the operator's field manager (conflicts forced: the
        operator owns what it applies)."""
        meta = manifest["metadata"]
        result: dict[str, Any] = await self.request(
            "PATCH",
            path(manifest["kind"], meta.get("namespace"), meta["name"]),
            params={"fieldManager": constants.FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type=APPLY_CONTENT_TYPE,
            kind=manifest["kind"],
        )
        return result

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create; None when an object of that name already exists (a success: the names
        are deterministic, so it is the same object)."""
        meta = manifest["metadata"]
        try:
            result: dict[str, Any] = await self.request(
                "POST",
                path(manifest["kind"], meta.get("namespace")),
                params={"fieldManager": constants.FIELD_MANAGER},
                body=manifest,
                kind=manifest["kind"],
            )
        except KubeError as exc:
            if exc.conflict and exc.reason == "AlreadyExists":
                return None
            raise
        return result

    async def replace(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object. With ``metadata.resourceVersion`` set, the server refuses
        it (HTTP 409 Conflict) if the object changed since it was read."""
        meta = manifest["metadata"]
        result: dict[str, Any] = await self.request(
            "PUT",
            path(manifest["kind"], meta.get("namespace"), meta["name"]),
            params={"fieldManager": constants.FIELD_MANAGER},
            body=manifest,
            kind=manifest["kind"],
        )
        return result

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
        url_path = path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        try:
            result: dict[str, Any] = await self.request(
                "PATCH",
                url_path,
                params={"fieldManager": constants.FIELD_MANAGER},
                body=patch,
                content_type=MERGE_CONTENT_TYPE,
                kind=kind + (f"/{subresource}" if subresource else ""),
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        return result

    async def json_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        operations: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        """JSON patch (RFC 6902): all ``operations`` or none; a failed ``test`` is a 4xx."""
        result: dict[str, Any] = await self.request(
            "PATCH",
            path(kind, namespace, name),
            params={"fieldManager": constants.FIELD_MANAGER},
            body=operations,
            content_type=JSON_PATCH_CONTENT_TYPE,
            kind=kind,
        )
        return result

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
        uid: str | None = None,
    ) -> bool:
        """Delete; False when it was already gone. With ``uid``, only that very object: one
        made since under the same name is left alone (also False)."""
        params = {} if grace_seconds is None else {"gracePeriodSeconds": str(grace_seconds)}
        body = None if uid is None else {"preconditions": {"uid": uid}}
        try:
            await self.request(
                "DELETE", path(kind, namespace, name), params=params, body=body, kind=kind
            )
        except KubeError as exc:
            if exc.not_found or (uid is not None and exc.conflict):
                return False
            raise
        return True
