"""Carrying out what ``scaling.decide`` asked for: drains, deletes and creates of pods.

- A drain marks the pod first (annotations, and out of the callers' Service by its serving
  label), then calls the runtime; a call that fails or is lost (a crash between the two) is
  repeated on every poll until the runtime acknowledges (``Actions.redrain``).
- A create the API server refuses (admission, quota, an invalid template) is recorded in the
  pool's state, with a back-off and one event and log line per new message; trouble reaching
  the API server is raised, so the pass is retried.
- A pod name taken by a pod this pool does not own is set aside, never touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from voicefleet import constants
from voicefleet.operator import builders, metrics, scaling
from voicefleet.operator.api_protocols import KubeApi, RuntimeApi
from voicefleet.operator.background import Background
from voicefleet.operator.kube import KubeError
from voicefleet.operator.pool_state import PoolState
from voicefleet.operator.runtime_client import RuntimeCallError
from voicefleet.operator.scaling import Actions, PodView
from voicefleet.rfc3339 import format_time

log = logging.getLogger(__name__)


class PodActions:
    """Drains, deletes and creates the pods of a pool."""

    def __init__(
        self,
        kube: KubeApi,
        runtime: RuntimeApi,
        background: Background,
        key: bytes,
        spot_fallback_seconds: float,
    ) -> None:
        self.kube = kube
        self.runtime = runtime
        self.background = background
        self.key = key
        self.spot_fallback_seconds = spot_fallback_seconds

    async def act(  # noqa: PLR0917
        self,
        pool: builders.PoolRef,
        body: Mapping[str, Any],
        actions: Actions,
        templates: Mapping[str, dict[str, Any]],
        pods: list[PodView],
        state: PoolState,
        avoid: tuple[str, ...],
    ) -> list[PodView]:
        """Carry out ``actions``; the pods as they are afterwards (for the status). New pods
        are kept off the ``avoid`` nodes (interrupted: some signals are labels only, which
        the scheduler does not see)."""
        if actions.empty:
            return pods
        now = time.time()
        by_name = {p.name: p for p in pods}
        token = builders.pool_token(self.key, pool)
        used = {builders.ordinal_of(pool, n) for n in {*by_name, *state.foreign_pod_names}}
        ordinals = scaling.free_ordinals({o for o in used if o is not None}, len(actions.create))
        manifests = [
            builders.build_pod(templates[kind], pool, ordinal, avoid)
            for kind, ordinal in zip(actions.create, ordinals, strict=True)
        ]
        # Drains, deletes and creates touch different pods: all at once, so a replacement
        # is not queued behind the drain calls of the pods it replaces.
        results = await asyncio.gather(
            *(self._drain(pool, body, d, token, now, state) for d in actions.drain),
            *(self._call_drain(pool, d, token, state) for d in actions.redrain),
            *(self._delete(pool, body, d) for d in actions.delete),
            *(self._create(pool, m, state) for m in manifests),
        )
        outcomes = results[len(results) - len(manifests) :]
        created = [outcome is True for outcome in outcomes]
        # One refusal per pass, the lowest pod name's: the same each pass, so the message
        # (and with it the event and the log line) changes only when the cause does.
        refusals = sorted(outcome for outcome in outcomes if isinstance(outcome, str))
        if refusals:
            self.refused(pool, body, state, refusals[0])
        for d in actions.drain:
            by_name[d.pod.name] = replace(
                d.pod, draining=True, drain_deadline=now + d.deadline_seconds
            )
        for gone in actions.delete:
            by_name.pop(gone.pod.name, None)
        names = [m["metadata"]["name"] for m, ok in zip(manifests, created, strict=True) if ok]
        for manifest, ok in zip(manifests, created, strict=True):
            if ok:
                view = PodView.from_body(manifest)
                by_name[view.name] = replace(view, created=now)
        if names and not refusals and state.refused.clear():
            log.info("%s: pods are created again", pool.key)
        if names:
            kinds = ", ".join(
                f"{actions.create.count(k)} {k}"
                for k in scaling.CAPACITY_TYPES
                if k in actions.create
            )
            self.background.event(
                body, constants.EVENT_POD_CREATED, f"created {kinds}: {', '.join(names)}"
            )
        if actions.spot_fallback and any(created):
            self.background.event(
                body,
                constants.EVENT_SPOT_FALLBACK,
                f"{actions.spot_fallback} spot pod(s) unschedulable for over "
                f"{self.spot_fallback_seconds:.0f} s: running on-demand stand-ins",
                warning=True,
            )
        return sorted(by_name.values(), key=lambda p: p.name)

    async def _create(
        self, pool: builders.PoolRef, manifest: dict[str, Any], state: PoolState
    ) -> bool | str:
        """Create one pod: True when it was created, False when it existed, the message
        when the API server refused it (admission, quota, an invalid template: the caller
        backs off). Trouble reaching the API server is raised, so the pass is retried. A name
        taken by a pod this pool does not own is set aside (never touched) and reported."""
        name = manifest["metadata"]["name"]
        kind = manifest["metadata"]["labels"][constants.LABEL_CAPACITY_TYPE]
        try:
            created = await self.kube.create(manifest)
        except KubeError as exc:
            if exc.transient or exc.namespace_terminating:
                raise
            return f"Pod {pool.namespace}/{name} was refused: {exc.message}"
        if created is None:
            live = await self.kube.get("Pod", pool.namespace, name)
            if live is not None and not builders.owned_by(live, pool):
                state.foreign_pod_names.add(name)
            return False
        metrics.POD_CREATES.labels(kind).inc()
        return True

    def refused(
        self, pool: builders.PoolRef, body: Mapping[str, Any], state: PoolState, message: str
    ) -> None:
        """Record a refused write: back off, and say so once per new message."""
        if state.refused.failed(message, time.time(), pool.generation):
            log.warning("%s: %s", pool.key, message)
            self.background.event(body, constants.EVENT_CREATE_FAILED, message, warning=True)

    async def _drain(  # noqa: PLR0917
        self,
        pool: builders.PoolRef,
        body: Mapping[str, Any],
        drain: scaling.Drain,
        token: str,
        now: float,
        state: PoolState,
    ) -> None:
        """Mark the pod draining (annotations, and out of the callers' Service), then tell
        its runtime. The mark goes first: if the call is lost, the pod is still treated as
        draining, takes no new callers, and the call is repeated on the next poll."""
        pod = drain.pod
        deadline = format_time(now + drain.deadline_seconds)
        patched = await self.kube.merge_patch(
            "Pod",
            pool.namespace,
            pod.name,
            {
                "metadata": {
                    "labels": {constants.LABEL_SERVING: constants.SERVING_NO},
                    "annotations": {
                        constants.ANNOTATION_DRAINING: "true",
                        constants.ANNOTATION_DRAIN_DEADLINE: deadline,
                        constants.ANNOTATION_DRAIN_REASON: drain.reason,
                        constants.ANNOTATION_DRAIN_NODE: pod.node or "",
                    },
                }
            },
        )
        if patched is None:
            return
        message = f"draining {pod.name} ({drain.reason}), deadline {drain.deadline_seconds} s"
        self.background.event(patched, constants.EVENT_DRAIN_STARTED, message)
        self.background.event(body, constants.EVENT_DRAIN_STARTED, message)
        await self._call_drain(pool, drain, token, state, involved=patched)

    async def _call_drain(
        self,
        pool: builders.PoolRef,
        drain: scaling.Drain,
        token: str,
        state: PoolState,
        *,
        involved: Mapping[str, Any] | None = None,
    ) -> None:
        """``POST /v1/drain``; a failure is reported once per new message (it is repeated
        on every poll until the runtime acknowledges)."""
        pod = drain.pod
        failure: str | None = None
        if pod.ip:
            try:
                await self.runtime.drain(pod.ip, token, drain.deadline_seconds, drain.reason)
            except RuntimeCallError as exc:
                failure = str(exc)
        else:
            failure = "pod has no IP"
        if failure is None:
            if state.drain_failures.pop(pod.name, None) is not None:
                log.info("%s: the drain of %s went through", pool.key, pod.name)
            return
        message = f"{constants.PATH_DRAIN} failed: {failure}; retried on every poll"
        if state.drain_failures.get(pod.name) == message:
            return
        state.drain_failures[pod.name] = message
        log.warning("%s/%s: %s", pool.namespace, pod.name, message)
        target = involved or _pod_ref(pool, pod.name)
        self.background.event(target, constants.EVENT_DRAIN_FAILED, message, warning=True)

    async def _delete(
        self, pool: builders.PoolRef, body: Mapping[str, Any], delete: scaling.Delete
    ) -> None:
        # A pod whose node is gone has no kubelet to confirm the exit: remove it at once.
        grace = 0 if delete.reason == scaling.REASON_NODE_GONE else None
        if await self.kube.delete("Pod", pool.namespace, delete.pod.name, grace_seconds=grace):
            metrics.POD_DELETES.labels(delete.reason).inc()
            self.background.event(
                body, constants.EVENT_POD_DELETED, f"deleted {delete.pod.name} ({delete.reason})"
            )


def _pod_ref(pool: builders.PoolRef, name: str) -> dict[str, Any]:
    """Enough of a pod's body to be an event's ``involvedObject``."""
    meta = {"name": name, "namespace": pool.namespace}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}
