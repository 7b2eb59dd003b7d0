"""In-memory stand-ins for the operator's two external services, for the unit tier.

``FakeKube`` answers the calls of ``api_protocols.KubeApi`` as the API server would for the
objects the reconcile touches (names, UIDs, resource versions, label and field selectors,
"already exists", merge and JSON patches with ``test``, UID preconditions); it does not
schedule: :meth:`FakeKube.run_pod` does what kwok does in the sandbox. ``FakeRuntimes``
answers ``RuntimeApi`` for the pods a test says run a runtime. Both count what was asked,
so a test can assert "a second pass writes nothing" as the sandbox tests do.

The kopf indexes the fleet reads (pool bodies, pool pods by node) are views computed from
the fake's objects, as kopf's would be from its watches.
"""

from __future__ import annotations

import builtins
import copy
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from voicefleet import constants
from voicefleet.api.gateway import GatewayStatus
from voicefleet.api.runtime import DrainRequest, DrainResponse, RuntimeStatus
from voicefleet.operator.gateway_client import GatewayCallError
from voicefleet.operator.kube import KubeError
from voicefleet.operator.runtime_client import RuntimeCallError
from voicefleet.rfc3339 import format_time
from voicefleet.testing.contract_server import report

Key = tuple[str, str, str]  # (kind, namespace, name)


def _merge(into: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386: null deletes, objects merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _pointer(doc: Any, path: str) -> tuple[Any, str]:
    """(parent, last key) of a JSON pointer; KeyError when the parent is missing."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc, parts[-1]


def _selects(labels: Mapping[str, str], selector: str | None) -> bool:
    for term in (selector or "").split(","):
        if not term:
            continue
        if "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


class FakeKube:
    """An in-memory API server (see the module docstring)."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self._names: dict[tuple[str, str], set[str]] = {}  # (kind, namespace) -> names
        self.writes: list[tuple[str, str, str]] = []  # (verb, kind, namespace)
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)
        self._ips = itertools.count(1)
        self.unreachable = False  # every call fails as with the API server stopped

    # --- KubeApi --------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        self._reachable()
        found = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        labels: str | None = None,
        fields: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        self._reachable()
        node = fields.removeprefix("spec.nodeName=") if fields else None
        where = [(k, ns) for k, ns in self._names if k == kind and namespace in (None, ns)]
        found = [self.objects[(k, ns, n)] for k, ns in where for n in sorted(self._names[(k, ns)])]
        return [
            copy.deepcopy(obj)
            for obj in found
            if _selects(obj["metadata"].get("labels") or {}, labels)
            and (node is None or (obj.get("spec") or {}).get("nodeName") == node)
        ]

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        self._write("POST", manifest)
        obj = copy.deepcopy(dict(manifest))
        meta = obj["metadata"]
        if "generateName" in meta and "name" not in meta:
            meta["name"] = f"{meta['generateName']}{next(self._uids):05d}"
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        if key in self.objects:
            return None
        meta.update(uid=f"uid-{next(self._uids)}", creationTimestamp=format_time())
        if obj["kind"] == "Pod":
            obj.setdefault("status", {"phase": "Pending"})
        return self._store(key, obj)

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._write("PATCH", manifest)
        meta = manifest["metadata"]
        key = (manifest["kind"], meta.get("namespace", ""), meta["name"])
        live = self.objects.get(key)
        if live is None:
            obj = copy.deepcopy(dict(manifest))
            obj["metadata"].update(uid=f"uid-{next(self._uids)}", creationTimestamp=format_time())
            return self._store(key, obj)
        _merge(live, manifest)
        return self._store(key, live)

    async def replace(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._write("PUT", manifest)
        meta = manifest["metadata"]
        key = (manifest["kind"], meta.get("namespace", ""), meta["name"])
        live = self.objects.get(key)
        if live is None:
            raise KubeError(404, "NotFound", f"{key} not found")
        if meta.get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        return self._store(key, copy.deepcopy(dict(manifest)))

    async def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str = "",
    ) -> dict[str, Any] | None:
        self._write("PATCH", {"kind": kind, "metadata": {"namespace": namespace or ""}})
        live = self.objects.get((kind, namespace or "", name))
        if live is None:
            return None
        _merge(live, patch)
        return self._store((kind, namespace or "", name), live)

    async def json_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        operations: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        self._write("PATCH", {"kind": kind, "metadata": {"namespace": namespace or ""}})
        key = (kind, namespace or "", name)
        if key not in self.objects:
            raise KubeError(404, "NotFound", f"{key} not found")
        doc = copy.deepcopy(self.objects[key])
        for op in operations:
            try:
                parent, last = _pointer(doc, op["path"])
                current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            except (KeyError, IndexError, TypeError) as exc:
                raise KubeError(422, "Invalid", f"path {op['path']}: {exc}") from exc
            if op["op"] == "test" and current != op["value"]:
                raise KubeError(422, "Invalid", f"test of {op['path']} failed")
            if op["op"] in ("add", "replace"):
                parent[last] = copy.deepcopy(op["value"])
        return self._store(key, doc)

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
        uid: str | None = None,
    ) -> bool:
        self._write("DELETE", {"kind": kind, "metadata": {"namespace": namespace or ""}})
        key = (kind, namespace or "", name)
        live = self.objects.get(key)
        if live is None or (uid is not None and live["metadata"]["uid"] != uid):
            return False
        self.drop(key)
        return True

    async def close(self) -> None:
        return None

    # --- what a test does to the cluster ----------------------------------------------------

    def pool(self, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """A VoiceAgentPool as the API server stores it."""
        obj = {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"pool-uid-{next(self._uids)}",
                "generation": 1,
            },
            "spec": dict(spec),
        }
        return self._store((constants.KIND, namespace, name), obj)

    def node(self, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
        obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": dict(labels), "uid": f"node-{name}"},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        return self._store(("Node", "", name), obj)

    def run_pod(self, namespace: str, name: str, node: str) -> str:
        """Bind a pod to ``node`` and make it Running and Ready, as kwok does; its IP."""
        pod = self.objects[("Pod", namespace, name)]
        ip = f"127.1.{next(self._ips) // 250}.{next(self._ips) % 250}"
        pod["spec"]["nodeName"] = node
        pod["status"] = {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}],
        }
        self._store(("Pod", namespace, name), pod)
        return ip

    def pods(self, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        return [
            o
            for (k, ns, _), o in sorted(self.objects.items())
            if k == "Pod" and (namespace is None or ns == namespace)
        ]

    # --- the indexes kopf would keep ---------------------------------------------------------

    def pool_bodies(self) -> Mapping[str, builtins.list[dict[str, Any]]]:
        return _View(
            lambda: {
                f"{ns}/{name}": [obj]
                for (kind, ns, name), obj in self.objects.items()
                if kind == constants.KIND
            }
        )

    def pods_by_node(self) -> Mapping[str, set[tuple[str, str]]]:
        def build() -> dict[str, set[tuple[str, str]]]:
            out: dict[str, set[tuple[str, str]]] = {}
            for pod in self.pods():
                node = pod["spec"].get("nodeName")
                pool = (pod["metadata"].get("labels") or {}).get(constants.LABEL_POOL)
                if node and pool:
                    out.setdefault(node, set()).add((pod["metadata"]["namespace"], pool))
            return out

        return _View(build)

    # --- inside -------------------------------------------------------------------------

    def drop(self, key: Key) -> None:
        """The object is gone (deleted, or a test removes it as a user would)."""
        del self.objects[key]
        self._names[key[:2]].discard(key[2])

    def _store(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = obj
        self._names.setdefault(key[:2], set()).add(key[2])
        return copy.deepcopy(obj)

    def _write(self, verb: str, manifest: Mapping[str, Any]) -> None:
        self._reachable()
        meta = manifest.get("metadata") or {}
        self.writes.append((verb, str(manifest.get("kind", "")), str(meta.get("namespace", ""))))

    def _reachable(self) -> None:
        if self.unreachable:
            raise KubeError(0, "ClientConnectorError", "the API server does not answer")


class _View(Mapping[str, Any]):
    """A read-only mapping computed afresh on every access (a live index)."""

    def __init__(self, build: Any) -> None:
        self._build = build

    def __getitem__(self, key: str) -> Any:
        return self._build()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())


class FakeRuntimes:
    """Runtime pods by IP: what each reports, and the drain calls each received."""

    def __init__(self) -> None:
        self.active: dict[str, int] = {}  # IP -> live sessions; absent: nothing answers
        self.draining: set[str] = set()
        self.drains: list[tuple[str, int, str]] = []  # (IP, deadline, reason)
        self.status_calls = 0

    async def status(self, pod_ip: str) -> RuntimeStatus:
        self.status_calls += 1
        if pod_ip not in self.active:
            raise RuntimeCallError(pod_ip, 0, "connection refused")
        return report(self.active[pod_ip], 40, draining=pod_ip in self.draining)

    async def drain(
        self, pod_ip: str, token: str, deadline_seconds: int, reason: str
    ) -> DrainResponse:
        if pod_ip not in self.active:
            raise RuntimeCallError(pod_ip, 0, "connection refused")
        DrainRequest(deadline_seconds=deadline_seconds, reason=reason)  # the contract's shape
        self.drains.append((pod_ip, deadline_seconds, reason))
        self.draining.add(pod_ip)
        return DrainResponse(
            draining=True, deadline_seconds=deadline_seconds, active=self.active[pod_ip]
        )

    async def close(self) -> None:
        return None


class FakeGateways:
    """Gateway replicas by IP: the backend sets each was sent (checked against the pool
    token's signature rules by the real gateway's tests), and what each answers."""

    def __init__(self) -> None:
        self.answering: dict[str, GatewayStatus] = {}  # IP -> its status; absent: unreachable
        self.pushes: list[tuple[str, str, list[str]]] = []  # (IP, token, backends)

    async def push(self, pod_ip: str, token: str, backends: Sequence[str]) -> GatewayStatus:
        if pod_ip not in self.answering:
            raise GatewayCallError(f"gateway {pod_ip}: connection refused")
        self.pushes.append((pod_ip, token, list(backends)))
        return self.answering[pod_ip]

    async def close(self) -> None:
        return None
