"""The pool's objects besides its pods: the token Secret, the two Services, the PDB, and the
gateway's Deployment and PDB (deleted again when the pool turns its gateway off).

Each is applied only when it differs from what the operator last applied (an applied-hash
annotation), and only when the pool owns it (an owner reference to its UID). An object of
one of those names that someone else made is never adopted: it would be overwritten, then
deleted with the pool. The caller gets a message instead and shows it as a NameConflict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from voicefleet import constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator import builders
from voicefleet.operator.api_protocols import KubeApi
from voicefleet.operator.builders.pod import DEFAULT_POD_SETTINGS
from voicefleet.operator.kube import KubeError
from voicefleet.operator.pool_state import PoolState
from voicefleet.operator.scaling import PodView

# Services and the PDB are re-read at most this often on timer ticks (they rarely change
# behind the operator's back; a spec change re-checks them at once).
VERIFY_SECONDS: Final = 30.0
T = TypeVar("T")
# What ``verified`` holds for an object made sure to be absent.
GONE: Final = "gone"
# JSON pointer to the first owner reference's UID (the pool's, on what the operator made).
OWNER_UID_PATH: Final = "/metadata/ownerReferences/0/uid"


def not_owned(kind: str, pool: builders.PoolRef, name: str) -> str:
    return (
        f"{kind} {pool.namespace}/{name} exists and is not owned by this pool; voicefleet "
        "never adopts it: delete or rename it, or give the pool another name"
    )


def foreign_pod(pool: builders.PoolRef, name: str) -> str:
    return (
        f"Pod {pool.namespace}/{name} exists and is not owned by this pool; voicefleet leaves "
        "it alone and uses other pod names"
    )


class Refused(Exception):
    """The API server refused one of the pool's objects (admission, an invalid name);
    ``str()`` says which and why. Retrying as is cannot help: the caller backs off."""


@dataclass(frozen=True)
class Ensured:
    """What ensuring the pool's objects found."""

    conflicts: list[str]  # objects of the pool's names that it does not own
    refusal: str | None  # the first write the API server refused
    # The token Secret is the pool's: its pods may mount it (never a stranger's Secret).
    secret_owned: bool


class PoolObjects:
    """Ensures the pool's Secret, Services and PDB; remembers what it applied."""

    def __init__(self, kube: KubeApi, key: bytes) -> None:
        self.kube = kube
        self.key = key
        # pool key -> (kind, name) -> (applied hash, when it was last seen in place)
        self.verified: dict[str, dict[tuple[str, str], tuple[str, float]]] = {}

    async def ensure_all(
        self,
        pool: builders.PoolRef,
        spec: VoiceAgentPoolSpec | None,
        *,
        force: bool,
        fresh: bool,
        settings: builders.PodSettings = DEFAULT_POD_SETTINGS,
    ) -> Ensured:
        """Every object but the pods; they do not depend on each other: all at once.
        ``spec`` None (it does not validate): what depends on it (the callers' Service and
        the gateway) is left as it is."""
        # The Secret first: the gateway mounts it, and must never mount a stranger's.
        secret = await asyncio.gather(self.ensure_secret(pool), return_exceptions=True)
        secret_owned = secret[0] is None
        manifests = [builders.build_headless_service(pool), builders.build_pdb(pool)]
        unwanted: list[tuple[str, str]] = []
        if spec is not None:
            gateway = spec.gateway.enabled
            manifests.append(builders.build_service(pool, gateway=gateway))
            name = builders.gateway_name(pool)
            if gateway and secret_owned:
                manifests += [
                    builders.build_gateway_deployment(pool, spec, settings),
                    builders.build_gateway_pdb(pool),
                ]
            else:
                unwanted = [("Deployment", name), ("PodDisruptionBudget", name)]
        results = [*secret] + await asyncio.gather(
            *(self.ensure(pool, manifest, force=force, fresh=fresh) for manifest in manifests),
            *(self.ensure_gone(pool, kind, name) for kind, name in unwanted),
            return_exceptions=True,
        )
        conflicts: list[str] = []
        refusals: list[str] = []
        for result in results:
            if isinstance(result, Refused):
                refusals.append(str(result))
            elif isinstance(result, BaseException):
                raise result
            elif result:
                conflicts.append(result)
        return Ensured(conflicts, refusals[0] if refusals else None, secret_owned)

    async def ensure_secret(self, pool: builders.PoolRef) -> str | None:
        """The token Secret; a conflict message when a Secret of its name is not the pool's.

        The operator may not read Secrets in pool namespaces. It creates the Secret; when one
        of that name exists, a JSON patch that first tests the owner reference and then sets
        the token changes it only if this pool owns it (and tells a stranger's Secret apart
        without reading it). The digest is remembered, so this runs once per process."""
        manifest = builders.build_secret(pool, builders.pool_token(self.key, pool))
        meta = manifest["metadata"]
        digest = meta["annotations"][constants.ANNOTATION_APPLIED_HASH]
        verified = self.verified.setdefault(pool.key, {})
        key = ("Secret", meta["name"])
        if verified.get(key, ("", 0.0))[0] == digest:
            return None
        if await _refusable(self.kube.create(manifest), manifest) is None:
            try:
                await self.kube.json_patch(
                    "Secret",
                    pool.namespace,
                    meta["name"],
                    [
                        {"op": "test", "path": OWNER_UID_PATH, "value": pool.uid},
                        {
                            "op": "add",
                            "path": "/data/" + constants.POOL_TOKEN_KEY,
                            "value": manifest["data"][constants.POOL_TOKEN_KEY],
                        },
                    ],
                )
            except KubeError as exc:
                if exc.transient or exc.not_found:
                    raise
                return not_owned("Secret", pool, meta["name"])
        verified[key] = (digest, time.monotonic())
        return None

    async def ensure(
        self,
        pool: builders.PoolRef,
        manifest: dict[str, Any],
        *,
        force: bool,
        fresh: bool = False,
    ) -> str | None:
        """Apply ``manifest`` unless the live object carries the same applied hash; a
        conflict message when an object of that name is not the pool's (left alone).

        ``fresh``: the pool was just created, so its objects most likely do not exist yet:
        create without reading first (one round trip, not two, before the pods)."""
        meta = manifest["metadata"]
        digest = meta["annotations"][constants.ANNOTATION_APPLIED_HASH]
        verified = self.verified.setdefault(pool.key, {})
        key = (manifest["kind"], meta["name"])
        seen, when = verified.get(key, ("", 0.0))
        if not force and seen == digest and time.monotonic() - when < VERIFY_SECONDS:
            return None
        create = self.kube.create
        if (
            fresh
            and key not in verified
            and await _refusable(create(manifest), manifest) is not None
        ):
            verified[key] = (digest, time.monotonic())
            return None
        live = await self.kube.get(manifest["kind"], meta["namespace"], meta["name"])
        if live is None:
            # Create, never apply: an apply would adopt an object made a moment ago.
            if await _refusable(create(manifest), manifest) is None:
                return not_owned(manifest["kind"], pool, meta["name"])
        elif not builders.owned_by(live, pool):
            verified.pop(key, None)
            return not_owned(manifest["kind"], pool, meta["name"])
        else:
            annotations = (live.get("metadata") or {}).get("annotations") or {}
            if annotations.get(constants.ANNOTATION_APPLIED_HASH) != digest:
                await _refusable(self.kube.apply(manifest), manifest)
        verified[key] = (digest, time.monotonic())
        return None

    async def ensure_gone(self, pool: builders.PoolRef, kind: str, name: str) -> None:
        """Delete the pool's own ``kind`` ``name`` if it exists (a stranger's is left be)."""
        verified = self.verified.setdefault(pool.key, {})
        if verified.get((kind, name), ("", 0.0))[0] == GONE:
            return
        live = await self.kube.get(kind, pool.namespace, name)
        if live is not None and builders.owned_by(live, pool):
            await self.kube.delete(kind, pool.namespace, name, uid=live["metadata"].get("uid"))
        verified[(kind, name)] = (GONE, time.monotonic())

    async def label_serving(self, pool: builders.PoolRef, pods: Sequence[PodView]) -> None:
        """Keep the label the callers' Service selects on (``constants.LABEL_SERVING``) true
        to each pod's drain mark: pods made by an older operator get it before that Service
        is applied, and a pod marked draining by any hand never takes new callers."""
        for pod in pods:
            value = constants.SERVING_NO if pod.draining else constants.SERVING_YES
            if pod.serving_label != value and not pod.deleting:
                await self.kube.merge_patch(
                    "Pod",
                    pool.namespace,
                    pod.name,
                    {"metadata": {"labels": {constants.LABEL_SERVING: value}}},
                )

    async def recheck_foreign_pods(self, pool: builders.PoolRef, state: PoolState) -> None:
        """Forget a pod name taken by a stranger once that pod is gone."""
        for name in sorted(state.foreign_pod_names):
            live = await self.kube.get("Pod", pool.namespace, name)
            if live is None or builders.owned_by(live, pool):
                state.foreign_pod_names.discard(name)

    def forget(self, pool_key: str) -> None:
        self.verified.pop(pool_key, None)

    def pools(self) -> set[str]:
        """Pools anything is kept for (for the tests' leak check)."""
        return set(self.verified)


async def _refusable(call: Awaitable[T], manifest: Mapping[str, Any]) -> T:
    """``await call``, with a refusal (a 4xx but a conflict) raised as :class:`Refused`."""
    try:
        return await call
    except KubeError as exc:
        if exc.transient or exc.namespace_terminating or exc.conflict:
            raise
        meta = manifest["metadata"]
        raise Refused(
            f"{manifest['kind']} {meta['namespace']}/{meta['name']} was refused: {exc.message}"
        ) from exc
