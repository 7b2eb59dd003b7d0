"""Reconcile one VoiceAgentPool: ordered, idempotent ensure steps, then status.

The steps, in this order (each looks its object up, writes only what differs, and treats
"already exists" as success):

1. the plan: spec validated, ``gpu.product: auto`` resolved from the nodes' GPU feature
   discovery labels, prices from the pool's ConfigMap, then the pure planner;
2. the pool token Secret (its token is an HMAC of the pool UID: see ``builders.secret``);
3. the runtime Service and the headless Service;
4. the PodDisruptionBudget;
5. the pods: what ``scaling.decide`` asks for (drains, deletes, creates) - skipped when the
   plan is invalid, so bad input never deletes anything that runs;
6. the status, computed from what was observed and written only when it changed.

Node signals enter through :meth:`Fleet.on_node`, which finds the pools with pods on that
node and runs the same reconcile for each at once (no runtime poll first: the drain calls
and replacements must go out within a second).

All state kept here (node view, last runtime reports, per-pool locks) can be rebuilt from
the cluster: an operator restarted mid-reconcile lists the pods again, and pod names are
ordinals, so a create that already happened answers "already exists" instead of making a
twin.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from voicefleet import catalog, constants
from voicefleet.api.manifest import describe
from voicefleet.api.pool import GPU_AUTO, PlanStatus, VoiceAgentPoolSpec
from voicefleet.api.runtime import RuntimeStatus
from voicefleet.operator import builders, interruption, metrics, scaling, status
from voicefleet.operator.config import OperatorConfig
from voicefleet.operator.interruption import NodeView, Signal
from voicefleet.operator.kube import Kube, KubeError
from voicefleet.operator.planner import PlanError, plan
from voicefleet.operator.runtime_client import RuntimeCallError, RuntimeClient
from voicefleet.operator.scaling import Actions, PodView

log = logging.getLogger(__name__)

KEY_BYTES: Final = 32
# Services and the PDB are re-read at most this often on timer ticks (they rarely change
# behind the operator's back; a spec change re-checks them at once).
VERIFY_SECONDS: Final = 30.0
# Deleted nodes are remembered this long, so pods still bound to them are recognised.
GONE_MEMORY_SECONDS: Final = 3600.0
POKE_DELAY_SECONDS: Final = 0.25

TRIGGER_CREATE: Final = "create"
TRIGGER_SPEC: Final = "spec"
TRIGGER_TIMER: Final = "timer"
TRIGGER_NODE: Final = "node"
TRIGGER_POD: Final = "pod"


class SpecInvalid(Exception):
    """The pool cannot be planned; ``message`` says what to change."""


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def load_or_create_key(kube: Kube, namespace: str) -> bytes:
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


@dataclass(frozen=True)
class Outcome:
    """What one reconcile did: its actions, or the reason the pool could not be planned."""

    actions: Actions | None = None
    plan_error: str | None = None


@dataclass(frozen=True)
class Planned:
    spec: VoiceAgentPoolSpec
    plan: PlanStatus
    gpu_product: str | None
    prices_error: str | None


class Fleet:
    """Everything the operator knows between reconciles, and the reconcile itself."""

    def __init__(
        self, kube: Kube, runtime: RuntimeClient, config: OperatorConfig, key: bytes
    ) -> None:
        self.kube = kube
        self.runtime = runtime
        self.config = config
        self.key = key
        self.nodes: dict[str, NodeView] = {}
        self.nodes_listed = False
        self.signals: dict[str, list[Signal]] = {}
        self.gone: dict[str, float] = {}
        self.reports: dict[tuple[str, str], RuntimeStatus | None] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.verified: dict[tuple[str, str, str], tuple[str, float]] = {}
        self.pools: set[str] = set()
        self._pending: set[str] = set()
        self.closed = False
        self.bodies: dict[str, Mapping[str, Any]] = {}
        self.last_pods: dict[str, list[PodView]] = {}
        self._pod_digests: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- entry points --------------------------------------------------------------------

    async def reconcile(
        self,
        body: Mapping[str, Any],
        *,
        trigger: str,
        poll: bool = True,
        on_locked: Callable[[], None] | None = None,
    ) -> Outcome:
        """Reconcile one pool; what it did."""
        meta = body.get("metadata") or {}
        if self.closed:
            return Outcome()  # the operator is stopping; a timer may still fire once
        if meta.get("deletionTimestamp"):
            return Outcome()  # garbage collection removes the rest (owner references)
        pool = builders.PoolRef.from_body(dict(body))
        self.pools.add(pool.key)
        metrics.POOLS.set(len(self.pools))
        lock = self.locks.setdefault(pool.key, asyncio.Lock())
        started = time.monotonic()
        if poll:
            # Ask the runtimes first, outside the lock: a slow pod must not hold up a node
            # reaction waiting for the same pool. The pods polled are those the last
            # reconcile saw; a new one is polled from the next tick on.
            await self._poll(pool, self.last_pods.get(pool.key, []))
        async with lock:
            if on_locked is not None:
                on_locked()
            try:
                return await self._reconcile(pool, body, trigger=trigger, poll=False)
            except KubeError as exc:
                if exc.namespace_terminating:
                    # The namespace (and so the pool) is going away; nothing to keep up.
                    return Outcome()
                metrics.RECONCILE_ERRORS.labels(trigger).inc()
                raise
            except Exception:
                metrics.RECONCILE_ERRORS.labels(trigger).inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.labels(trigger).observe(time.monotonic() - started)

    async def reconcile_by_name(
        self,
        namespace: str,
        name: str,
        *,
        trigger: str,
        poll: bool = False,
        on_locked: Callable[[], None] | None = None,
    ) -> Outcome:
        # The pool as kopf's watch last showed it (no request on the interruption path);
        # read from the API only for a pool that event has not shown yet.
        body = self.bodies.get(f"{namespace}/{name}")
        if body is None:
            body = await self.kube.get(constants.KIND, namespace, name)
        if body is None:
            if on_locked is not None:
                on_locked()
            return Outcome()
        return await self.reconcile(body, trigger=trigger, poll=poll, on_locked=on_locked)

    def pool_seen(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Keep the latest body of each pool from kopf's watch."""
        meta = body.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        if event_type == "DELETED":
            self.bodies.pop(key, None)
        else:
            self.bodies[key] = body

    def pod_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """An owned pod changed: reconcile its pool soon, if what changed matters to it
        (phase, readiness, node, IP, drain, deletion; not every status heartbeat)."""
        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        pool = (meta.get("labels") or {}).get(constants.LABEL_POOL)
        if not pool:
            return
        key = (namespace, str(meta.get("name", "")))
        if event_type == "DELETED":
            self._pod_digests.pop(key, None)
        else:
            view = PodView.from_body(body)
            digest = (view.phase, view.ready, view.node, view.ip, view.draining, view.deleting)
            if self._pod_digests.get(key) == digest:
                return
            self._pod_digests[key] = digest
        self.poke(namespace, str(pool))

    def poke(self, namespace: str, name: str) -> None:
        """Reconcile a pool soon; pokes coalesce while one waits for the pool's lock."""
        key = f"{namespace}/{name}"
        if key in self._pending or not self.config.watches(namespace):
            return
        self._pending.add(key)

        async def run() -> None:
            try:
                # Debounce: the pods of one pool change together (scheduled, running,
                # ready); one reconcile a moment later sees them all. This runs in a task
                # of its own, never in a kopf handler.
                await asyncio.sleep(POKE_DELAY_SECONDS)
                await self.reconcile_by_name(
                    namespace,
                    name,
                    trigger=TRIGGER_POD,
                    on_locked=lambda: self._pending.discard(key),
                )
            except KubeError as exc:
                log.warning("reconcile of %s after a pod change failed: %s", key, exc)
            finally:
                self._pending.discard(key)

        self._spawn(run())

    def forget(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self.pools.discard(key)
        self.bodies.pop(key, None)
        self.last_pods.pop(key, None)
        self.locks.pop(key, None)
        metrics.POOLS.set(len(self.pools))

    async def on_node(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Node changed: if it newly shows an interruption signal (or is gone), react in
        every pool with pods there, at once."""
        if self.closed:
            return
        started = time.monotonic()
        name = str((body.get("metadata") or {}).get("name", ""))
        self._forget_old_gone()
        if event_type == "DELETED":
            self.nodes.pop(name, None)
            self.signals.pop(name, None)
            self.gone[name] = time.time()
            new = [Signal(interruption.KIND_DELETED)]
        else:
            view = NodeView.from_body(body)
            self.nodes[name] = view
            self.gone.pop(name, None)
            found = interruption.signals(view, self.config.signals)
            old = self.signals.get(name, [])
            if found:
                self.signals[name] = found
            else:
                self.signals.pop(name, None)
            new = [s for s in found if s not in old]
        if not new:
            return
        for signal in new:
            metrics.INTERRUPTIONS.labels(signal.kind).inc()
        pods = await self._pods_on_node(name)
        pools = sorted(
            {
                (p["metadata"]["namespace"], p["metadata"]["labels"][constants.LABEL_POOL])
                for p in pods
                if self.config.watches(p["metadata"]["namespace"])
            }
        )
        if not pools:
            return
        why = ", ".join(s.describe() for s in new)
        log.info("node %s: %s; reacting in %d pool(s)", name, why, len(pools))
        results = await asyncio.gather(
            *(self.reconcile_by_name(ns, pool, trigger=TRIGGER_NODE) for ns, pool in pools),
            return_exceptions=True,
        )
        for (ns, pool), result in zip(pools, results, strict=True):
            if isinstance(result, BaseException):
                log.error("reacting to node %s in %s/%s failed: %r", name, ns, pool, result)
        metrics.INTERRUPTION_SECONDS.observe(time.monotonic() - started)

    async def _pods_on_node(self, node: str) -> list[dict[str, Any]]:
        """Pool pods on ``node``: one list across the cluster, or one per watched namespace
        (with watched namespaces the operator may list pods nowhere else)."""
        fields = f"spec.nodeName={node}"
        if self.config.all_namespaces or not self.config.namespaces:
            return await self.kube.list("Pod", None, labels=constants.LABEL_POOL, fields=fields)
        found = await asyncio.gather(
            *(
                self.kube.list("Pod", ns, labels=constants.LABEL_POOL, fields=fields)
                for ns in self.config.namespaces
            )
        )
        return [pod for pods in found for pod in pods]

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runtime.close()
        await self.kube.close()

    # --- the steps -----------------------------------------------------------------------

    async def _reconcile(
        self, pool: builders.PoolRef, body: Mapping[str, Any], *, trigger: str, poll: bool
    ) -> Outcome:
        previous = dict(body.get("status") or {})
        force_verify = trigger in (TRIGGER_SPEC, TRIGGER_CREATE)
        fresh = trigger == TRIGGER_CREATE
        planned: Planned | None = None
        plan_error: str | None = None
        try:
            planned = await self._plan(pool, body)
        except SpecInvalid as exc:
            plan_error = str(exc)

        # Steps 2-4 depend on nothing but the pool, and not on each other: run them
        # together (a new pool's pods come up one round trip sooner), all before the pods.
        await asyncio.gather(
            self._ensure_secret(pool),
            *(
                self._ensure(manifest, force=force_verify, fresh=fresh)
                for manifest in (
                    builders.build_service(pool),
                    builders.build_headless_service(pool),
                    builders.build_pdb(pool),
                )
            ),
        )

        pods = await self._observe_pods(pool, poll=poll)
        actions: Actions | None = None
        hashes: dict[str, str] = {}
        if planned is not None:
            templates = {
                kind: builders.build_pod_template(
                    pool,
                    planned.spec,
                    planned.plan,
                    kind,
                    planned.gpu_product,
                    settings=self.config.pods,
                )
                for kind in scaling.CAPACITY_TYPES
            }
            hashes = {
                kind: t["metadata"]["annotations"][constants.ANNOTATION_SPEC_HASH]
                for kind, t in templates.items()
            }
            inputs = scaling.Inputs(
                pods=pods,
                desired=scaling.Desired(
                    {
                        constants.CAPACITY_ON_DEMAND: planned.plan.on_demand_replicas,
                        constants.CAPACITY_SPOT: planned.plan.spot_replicas,
                    },
                    hashes,
                ),
                now=time.time(),
                drain_seconds=planned.spec.capacity.interruption.drain_seconds,
                interrupted={
                    node: ", ".join(s.describe() for s in sig) for node, sig in self.signals.items()
                },
                gone_nodes=frozenset(self.gone),
                spot_fallback_seconds=self.config.spot_fallback_seconds,
            )
            actions = scaling.decide(inputs)
            pods = await self._act(pool, body, actions, templates, pods)

        observed = status.Observation(
            generation=pool.generation,
            selector=builders.selector_string(pool),
            pods=pods,
            plan=planned.plan if planned else None,
            plan_error=plan_error,
            prices_error=planned.prices_error if planned else None,
            desired_hashes=hashes,
            spot_fallback=actions.spot_fallback if actions else 0,
            target_sessions=planned.spec.sessions.target if planned else 0,
            now=time.time(),
            not_ready_timeout_seconds=self.config.not_ready_timeout_seconds,
        )
        wanted = status.compute(observed, previous)
        if planned is None and previous.get("plan"):
            wanted["plan"] = previous["plan"]  # keep showing what runs
        self._export_pod_gauges(pool, pods, planned.plan if planned else None)
        if status.changed(wanted, previous):
            if plan_error is not None and _degraded_message(previous) != plan_error:
                self._event(body, constants.EVENT_PLAN_INVALID, plan_error, warning=True)
            await self.kube.merge_patch(
                constants.KIND, pool.namespace, pool.name, {"status": wanted}, subresource="status"
            )
        return Outcome(actions, plan_error)

    async def _plan(self, pool: builders.PoolRef, body: Mapping[str, Any]) -> Planned:
        try:
            spec = VoiceAgentPoolSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            # The API server's words, as `voicefleet plan` prints them (the CRD's rules
            # usually stop such a spec before it gets here).
            problems = [describe(e, prefix=("spec",)) for e in exc.errors()]
            raise SpecInvalid("; ".join(problems)) from exc
        gpu_product: str | None = spec.gpu.product
        if spec.gpu.product == GPU_AUTO:
            gpu_product = await self._auto_gpu(spec)
            spec = spec.model_copy(
                update={"gpu": spec.gpu.model_copy(update={"product": gpu_product})}
            )
        prices, prices_error = await self._prices(pool, spec)
        try:
            planned = plan(spec, prices)
        except PlanError as exc:
            raise SpecInvalid(str(exc)) from exc
        return Planned(spec, planned, gpu_product, prices_error)

    async def _auto_gpu(self, spec: VoiceAgentPoolSpec) -> str:
        """``gpu.product: auto``: the product most of the pool's usable nodes report."""
        if not self.nodes_listed and not self.nodes:
            for node in await self.kube.list("Node"):
                view = NodeView.from_body(node)
                self.nodes[view.name] = view
            self.nodes_listed = True
        strategy = spec.capacity.strategy
        usable = [
            n
            for n in self.nodes.values()
            if n.name not in self.signals
            and (
                strategy == constants.STRATEGY_SPOT_FIRST
                or interruption.is_spot(n.labels) == (strategy == constants.STRATEGY_SPOT_ONLY)
            )
        ]
        counts = interruption.gpu_products(usable)
        if not counts:
            raise SpecInvalid(
                "spec.gpu.product: auto found no usable node with a "
                f"{constants.NODE_LABEL_GPU_PRODUCT} label for strategy {strategy}; "
                "install GPU feature discovery or name the product"
            )
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]

    async def _prices(
        self, pool: builders.PoolRef, spec: VoiceAgentPoolSpec
    ) -> tuple[catalog.PriceTable, str | None]:
        name = spec.capacity.pricing.config_map_name
        if not name:
            return catalog.default_prices(), None
        found = await self.kube.get("ConfigMap", pool.namespace, name)
        origin = f"ConfigMap {pool.namespace}/{name}"
        if found is None:
            return catalog.default_prices(), f"{origin} not found"
        text = (found.get("data") or {}).get(constants.PRICES_CONFIGMAP_KEY)
        if text is None:
            key = constants.PRICES_CONFIGMAP_KEY
            return catalog.default_prices(), f"{origin} has no key {key}"
        try:
            table = catalog.parse_prices(text, origin)
        except catalog.CatalogError as exc:
            return catalog.default_prices(), str(exc)
        return table.merged_over(catalog.default_prices()), None

    async def _ensure_secret(self, pool: builders.PoolRef) -> None:
        """The token Secret. The operator may not read Secrets in pool namespaces, so it
        remembers what it applied; after a restart it applies once more (a no-op)."""
        manifest = builders.build_secret(pool, builders.pool_token(self.key, pool))
        digest = manifest["metadata"]["annotations"][constants.ANNOTATION_APPLIED_HASH]
        key = ("Secret", pool.namespace, manifest["metadata"]["name"])
        if self.verified.get(key, ("", 0.0))[0] == digest:
            return
        await self.kube.apply(manifest)
        self.verified[key] = (digest, time.monotonic())

    async def _ensure(self, manifest: dict[str, Any], *, force: bool, fresh: bool = False) -> bool:
        """Apply ``manifest`` unless the live object carries the same applied hash.

        ``fresh``: the pool was just created, so its objects cannot exist yet; apply
        without reading first (one round trip, not two, before the pods)."""
        meta = manifest["metadata"]
        digest = meta["annotations"][constants.ANNOTATION_APPLIED_HASH]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        seen, when = self.verified.get(key, ("", 0.0))
        if not force and seen == digest and time.monotonic() - when < VERIFY_SECONDS:
            return False
        if fresh and key not in self.verified:
            await self.kube.apply(manifest)
            self.verified[key] = (digest, time.monotonic())
            return True
        live = await self.kube.get(manifest["kind"], meta["namespace"], meta["name"])
        annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
        written = bool(annotations.get(constants.ANNOTATION_APPLIED_HASH) != digest)
        if written:
            await self.kube.apply(manifest)
        self.verified[key] = (digest, time.monotonic())
        return written

    async def _observe_pods(self, pool: builders.PoolRef, *, poll: bool) -> list[PodView]:
        bodies = await self.kube.list(
            "Pod", pool.namespace, labels=f"{constants.LABEL_POOL}={pool.name}"
        )
        views = [
            PodView.from_body(b)
            for b in bodies
            if builders.ordinal_of(pool, b["metadata"]["name"]) is not None
        ]
        if poll:
            await self._poll(pool, views)
        self.last_pods[pool.key] = views
        names = {v.name for v in views}
        for key in [k for k in self.reports if k[0] == pool.namespace and k[1] not in names]:
            if key[1].startswith(f"{pool.name}-"):
                del self.reports[key]
        return [self._with_report(pool, v) for v in views]

    async def _poll(self, pool: builders.PoolRef, views: Sequence[PodView]) -> None:
        running = [v for v in views if v.running and not v.deleting and v.ip]

        async def one(view: PodView) -> None:
            assert view.ip is not None
            try:
                self.reports[(pool.namespace, view.name)] = await self.runtime.status(view.ip)
            except RuntimeCallError as exc:
                log.debug("%s/%s: %s", pool.namespace, view.name, exc)
                self.reports[(pool.namespace, view.name)] = None

        await asyncio.gather(*(one(v) for v in running))

    def _with_report(self, pool: builders.PoolRef, view: PodView) -> PodView:
        report = self.reports.get((pool.namespace, view.name))
        if report is None or not view.running:
            return view
        return replace(
            view,
            sessions_active=report.sessions.active,
            runtime_loaded=report.model.loaded,
            runtime_draining=report.draining,
        )

    async def _act(
        self,
        pool: builders.PoolRef,
        body: Mapping[str, Any],
        actions: Actions,
        templates: Mapping[str, dict[str, Any]],
        pods: list[PodView],
    ) -> list[PodView]:
        """Carry out ``actions``; the pods as they are afterwards (for the status)."""
        if actions.empty:
            return pods
        now = time.time()
        by_name = {p.name: p for p in pods}
        token = builders.pool_token(self.key, pool)
        used = {builders.ordinal_of(pool, p.name) for p in pods}
        ordinals = scaling.free_ordinals({o for o in used if o is not None}, len(actions.create))
        avoid = tuple(sorted(set(self.signals) | set(self.gone)))
        manifests = [
            builders.build_pod(templates[kind], pool, ordinal, avoid)
            for kind, ordinal in zip(actions.create, ordinals, strict=True)
        ]
        # Drains, deletes and creates touch different pods: all at once, so a replacement
        # is not queued behind the drain calls of the pods it replaces.
        results = await asyncio.gather(
            *(self._drain(pool, body, d, token, now) for d in actions.drain),
            *(self._delete(pool, body, d) for d in actions.delete),
            *(self._create(body, m) for m in manifests),
        )
        created = results[len(actions.drain) + len(actions.delete) :]
        for d in actions.drain:
            by_name[d.pod.name] = replace(
                d.pod, draining=True, drain_deadline=now + d.deadline_seconds
            )
        for gone in actions.delete:
            by_name.pop(gone.pod.name, None)
        names = [m["metadata"]["name"] for m, ok in zip(manifests, created, strict=True) if ok]
        for manifest in manifests:
            view = PodView.from_body(manifest)
            by_name[view.name] = replace(view, created=now)
        if names:
            kinds = ", ".join(
                f"{actions.create.count(k)} {k}"
                for k in scaling.CAPACITY_TYPES
                if k in actions.create
            )
            self._event(body, constants.EVENT_POD_CREATED, f"created {kinds}: {', '.join(names)}")
        if actions.spot_fallback and any(created):
            self._event(
                body,
                constants.EVENT_SPOT_FALLBACK,
                f"{actions.spot_fallback} spot pod(s) unschedulable for over "
                f"{self.config.spot_fallback_seconds:.0f} s: running on-demand stand-ins",
                warning=True,
            )
        return sorted(by_name.values(), key=lambda p: p.name)

    async def _create(self, body: Mapping[str, Any], manifest: dict[str, Any]) -> bool:
        """Create one pod; False when it already existed. A refusal (quota, admission) is
        recorded as an event and raised, so kopf retries with back-off."""
        kind = manifest["metadata"]["labels"][constants.LABEL_CAPACITY_TYPE]
        try:
            created = await self.kube.create(manifest)
        except KubeError as exc:
            if not exc.namespace_terminating:
                self._event(
                    body,
                    constants.EVENT_CREATE_FAILED,
                    f"creating {manifest['metadata']['name']}: {exc.message}",
                    warning=True,
                )
            raise
        if created is not None:
            metrics.POD_CREATES.labels(kind).inc()
        return created is not None

    async def _drain(
        self,
        pool: builders.PoolRef,
        body: Mapping[str, Any],
        drain: scaling.Drain,
        token: str,
        now: float,
    ) -> bool:
        """Mark the pod draining (annotation), then tell its runtime. The annotation goes
        first: if the call fails, the pod is still treated as draining and deleted at its
        deadline."""
        pod = drain.pod
        patched = await self.kube.merge_patch(
            "Pod",
            pool.namespace,
            pod.name,
            {
                "metadata": {
                    "annotations": {
                        constants.ANNOTATION_DRAINING: "true",
                        constants.ANNOTATION_DRAIN_DEADLINE: _rfc3339(now + drain.deadline_seconds),
                        constants.ANNOTATION_DRAIN_REASON: drain.reason,
                        constants.ANNOTATION_DRAIN_NODE: pod.node or "",
                    }
                }
            },
        )
        if patched is None:
            return False
        message = f"draining {pod.name} ({drain.reason}), deadline {drain.deadline_seconds} s"
        failure: str | None = None
        if pod.ip:
            try:
                await self.runtime.drain(pod.ip, token, drain.deadline_seconds, drain.reason)
            except RuntimeCallError as exc:
                failure = str(exc)
        else:
            failure = "pod has no IP"
        self._event(patched, constants.EVENT_DRAIN_STARTED, message)
        self._event(body, constants.EVENT_DRAIN_STARTED, message)
        if failure is not None:
            self._event(
                patched,
                constants.EVENT_DRAIN_FAILED,
                f"{constants.PATH_DRAIN} failed: {failure}; the pod is deleted at its deadline",
                warning=True,
            )
        return True

    async def _delete(
        self, pool: builders.PoolRef, body: Mapping[str, Any], delete: scaling.Delete
    ) -> bool:
        # A pod whose node is gone has no kubelet to confirm the exit: remove it at once.
        grace = 0 if delete.reason == scaling.REASON_NODE_GONE else None
        if await self.kube.delete("Pod", pool.namespace, delete.pod.name, grace_seconds=grace):
            metrics.POD_DELETES.labels(delete.reason).inc()
            self._event(
                body, constants.EVENT_POD_DELETED, f"deleted {delete.pod.name} ({delete.reason})"
            )
            return True
        return False

    def _event(
        self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Post an event in the background: events are best effort (a failed one is logged,
        never fails the reconcile) and must not delay drains and replacements."""

        async def post() -> None:
            try:
                await self.kube.event(involved, reason, message, warning=warning)
            except KubeError as exc:
                log.warning("event %s not recorded: %s", reason, exc)

        self._spawn(post())

    def _export_pod_gauges(
        self, pool: builders.PoolRef, pods: Sequence[PodView], plan: PlanStatus | None
    ) -> None:
        live = [p for p in pods if not p.deleting]
        for capacity in (constants.CAPACITY_SPOT, constants.CAPACITY_ON_DEMAND):
            count = sum(1 for p in live if p.capacity_type == capacity)
            metrics.POOL_REPLICAS.labels(pool.namespace, pool.name, capacity).set(count)
        if plan is not None and plan.cost_per_session_hour is not None:
            metrics.POOL_COST_PER_SESSION_HOUR.labels(pool.namespace, pool.name).set(
                plan.cost_per_session_hour
            )
        counts = {
            "serving": sum(1 for p in live if p.serving),
            "starting": sum(1 for p in live if not p.serving and not p.draining),
            "draining": sum(1 for p in live if p.draining),
        }
        for state, count in counts.items():
            metrics.PODS.labels(pool.namespace, pool.name, state).set(count)

    def _forget_old_gone(self) -> None:
        cutoff = time.time() - GONE_MEMORY_SECONDS
        for name in [n for n, t in self.gone.items() if t < cutoff]:
            del self.gone[name]

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def wrapped() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(wrapped())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _degraded_message(previous: Mapping[str, Any]) -> str | None:
    for condition in previous.get("conditions") or []:
        if condition.get("type") == constants.CONDITION_DEGRADED:
            return str(condition.get("message", ""))
    return None
