"""Reconcile one VoiceAgentPool: ordered, idempotent ensure steps, then status.

The steps, in this order (each looks its object up, writes only what differs, and treats
"already exists" as success):

1. the plan: spec validated, ``gpu.product: auto`` resolved from the nodes' GPU feature
   discovery labels, prices from the pool's ConfigMap, then the pure planner;
2. the pool's pods, listed (only those the pool owns); older pods get the label the
   callers' Service selects on, before that Service is applied;
3. the pool token Secret (its token is an HMAC of the pool UID: see ``builders.secret``),
   the runtime Service, the headless Service and the PodDisruptionBudget; an object of one
   of those names that the pool does not own is never adopted: a NameConflict instead;
4. the pods: what ``scaling.decide`` asks for (drains, deletes, creates) - skipped when the
   plan is invalid, so bad input never deletes anything that runs; creates the API server
   refuses wait with a back-off (``pool_state.CreateBackoff``);
5. the status, computed from what was observed and written only when it changed.

Node signals enter through :meth:`Fleet.on_node` (judged by ``nodes.NodeWatch``), which finds
the pools with pods on that node and runs the same reconcile for each at once (no runtime
poll first: the drain calls and replacements must go out within a second).

All state kept here (node view, last runtime reports, per-pool locks and ``PoolState``) can
be rebuilt from the cluster or lost without harm, and is dropped with its pool: an operator
restarted mid-reconcile lists the pods again, and pod names are ordinals, so a create that
already happened answers "already exists" instead of making a twin.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from pydantic import ValidationError

from voicefleet import catalog, constants
from voicefleet.api import names
from voicefleet.api.manifest import describe
from voicefleet.api.pool import GPU_AUTO, PlanStatus, VoiceAgentPoolSpec
from voicefleet.api.runtime import RuntimeStatus
from voicefleet.operator import builders, interruption, metrics, pool_objects, scaling, status
from voicefleet.operator.background import Background
from voicefleet.operator.config import OperatorConfig
from voicefleet.operator.interruption import Signal
from voicefleet.operator.kube import Kube, KubeError
from voicefleet.operator.nodes import MassNotReady, NodeWatch
from voicefleet.operator.planner import PlanError, plan
from voicefleet.operator.pod_actions import PodActions
from voicefleet.operator.pool_objects import PoolObjects
from voicefleet.operator.pool_state import PoolState
from voicefleet.operator.runtime_client import RuntimeCallError, RuntimeClient
from voicefleet.operator.scaling import Actions, PodView

log = logging.getLogger(__name__)

KEY_BYTES: Final = 32
POKE_DELAY_SECONDS: Final = 0.25

TRIGGER_CREATE: Final = "create"
TRIGGER_SPEC: Final = "spec"
TRIGGER_TIMER: Final = "timer"
TRIGGER_NODE: Final = "node"
TRIGGER_POD: Final = "pod"


class SpecInvalid(Exception):
    """The pool cannot be planned; ``message`` says what to change."""


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
        self.watch = NodeWatch(config.signals)
        self.background = Background(kube)
        self.objects = PoolObjects(kube, key)
        self.pod_actions = PodActions(
            kube, runtime, self.background, key, config.spot_fallback_seconds
        )
        self.reports: dict[tuple[str, str], RuntimeStatus | None] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.pools: set[str] = set()
        self.state: dict[str, PoolState] = {}
        self._pending: set[str] = set()
        self.closed = False
        self.bodies: dict[str, Mapping[str, Any]] = {}
        self.last_pods: dict[str, list[PodView]] = {}
        self._pod_digests: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._recheck: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read every node once before any node event is acted on (``NodeWatch.seed``)."""
        self.watch.seed(await self.kube.list("Node"), time.time())
        if self.watch.mass is not None:
            log.warning("%s", self.watch.mass.describe(self.config.signals.mass_not_ready_fraction))
        self._schedule_recheck()

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
                outcome = await self._reconcile(pool, body, trigger=trigger, fresh_reports=poll)
            except KubeError as exc:
                if exc.namespace_terminating:
                    # The namespace (and so the pool) is going away; nothing to keep up.
                    return Outcome()
                metrics.RECONCILE_ERRORS.labels(trigger).inc()
                self._api_trouble(pool, exc)
                raise
            except Exception:
                metrics.RECONCILE_ERRORS.labels(trigger).inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.labels(trigger).observe(time.monotonic() - started)
            self._api_trouble(pool, None)
            return outcome

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

        self.background.spawn(run())

    def forget(self, namespace: str, name: str) -> None:
        """Drop everything kept for a deleted pool (nothing may outlive it)."""
        key = f"{namespace}/{name}"
        self.pools.discard(key)
        self.bodies.pop(key, None)
        self.last_pods.pop(key, None)
        self.locks.pop(key, None)
        self.state.pop(key, None)
        self.objects.forget(builders.PoolRef(name=name, namespace=namespace, uid=""))
        for pod_key in [k for k in self.reports if k[0] == namespace and _of_pool(name, k[1])]:
            del self.reports[pod_key]
        for pod_key in [k for k in self._pod_digests if k[0] == namespace and _of_pool(name, k[1])]:
            del self._pod_digests[pod_key]
        metrics.POOLS.set(len(self.pools))

    async def remove_pods(self, body: Mapping[str, Any]) -> None:
        """Delete the pods of a pool that was just deleted, at once. The garbage collector
        would, but behind the controller manager's client rate limit (20 requests/s by
        default, about three per pod): 50 pools deleted together kept their pods waiting
        up to 12 s. Only pods owned by that pool's UID, each by its own UID: a pool made
        again under the same name gets the same pod names."""
        pool = builders.PoolRef.from_body(dict(body))
        try:
            listed = await self.kube.list(
                "Pod", pool.namespace, labels=f"{constants.LABEL_POOL}={pool.name}"
            )
            owned = [
                p
                for p in listed
                if builders.owned_by(p, pool) and not p["metadata"].get("deletionTimestamp")
            ]
            done = await asyncio.gather(
                *(
                    self.kube.delete(
                        "Pod", pool.namespace, p["metadata"]["name"], uid=p["metadata"]["uid"]
                    )
                    for p in owned
                )
            )
        except KubeError as exc:
            # The garbage collector still deletes them; nothing waits on this.
            log.warning("%s: deleting the pods of the deleted pool failed: %s", pool.key, exc)
            return
        metrics.POD_DELETES.labels(scaling.REASON_POOL_DELETED).inc(sum(done))

    async def on_node(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Node changed: if it newly shows an interruption signal (or is gone), react in
        every pool with pods there, at once."""
        if self.closed:
            return
        started = time.monotonic()
        was = self.watch.mass
        new = self.watch.seen(event_type, body, time.time())
        self._mass_changed(was)
        self._schedule_recheck()
        await self._react(new, started)

    async def close(self) -> None:
        self.closed = True
        await self.background.close()
        await self.runtime.close()
        await self.kube.close()

    # --- node signals --------------------------------------------------------------------

    async def _react(self, new: Mapping[str, list[Signal]], started: float) -> None:
        """Reconcile, at once, every pool with pods on a node that shows a new signal."""
        if not new:
            return
        for signals in new.values():
            for signal in signals:
                metrics.INTERRUPTIONS.labels(signal.kind).inc()
        listed = await asyncio.gather(*(self._pods_on_node(node) for node in sorted(new)))
        pools = sorted(
            {
                (p["metadata"]["namespace"], p["metadata"]["labels"][constants.LABEL_POOL])
                for pods in listed
                for p in pods
                if self.config.watches(p["metadata"]["namespace"])
            }
        )
        if not pools:
            return
        why = "; ".join(
            f"{node}: {', '.join(s.describe() for s in signals)}"
            for node, signals in sorted(new.items())
        )
        log.info("%s; reacting in %d pool(s)", why, len(pools))
        results = await asyncio.gather(
            *(self.reconcile_by_name(ns, pool, trigger=TRIGGER_NODE) for ns, pool in pools),
            return_exceptions=True,
        )
        for (ns, pool), result in zip(pools, results, strict=True):
            if isinstance(result, BaseException):
                log.error("reacting to %s in %s/%s failed: %r", why, ns, pool, result)
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

    def _api_trouble(self, pool: builders.PoolRef, error: KubeError | None) -> None:
        """One log line when a pool's reconciles start failing against the API (and what
        kind of failure), and one when they work again: never one per retry."""
        state = self.state.setdefault(pool.key, PoolState())
        kind = None if error is None else f"HTTP {error.status} {error.reason}".strip()
        if kind == state.api_trouble:
            return
        if error is not None:
            log.warning("%s: reconcile failed (%s); retried on every tick", pool.key, error)
        elif state.api_trouble is not None:
            log.info("%s: reconciles work again", pool.key)
        state.api_trouble = kind

    def _mass_changed(self, was: MassNotReady | None) -> None:
        metrics.NODES_NOT_READY.set(len(self.watch.not_ready_nodes()))
        now = self.watch.mass
        metrics.MASS_NOT_READY.set(1 if now is not None else 0)
        if bool(now) == bool(was):
            return
        if now is not None:
            log.warning("%s", now.describe(self.config.signals.mass_not_ready_fraction))
        else:
            log.info("fewer nodes are NotReady now: NotReady nodes are judged one by one again")

    def _schedule_recheck(self) -> None:
        """Judge the nodes again when the next NotReady grace period ends (no event comes
        then); one pending check at a time."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        at = self.watch.next_check(time.time())
        if at is None or self.closed:
            return

        async def run() -> None:
            await asyncio.sleep(max(0.0, at - time.time()))
            self._recheck = None
            started = time.monotonic()
            was = self.watch.mass
            new = self.watch.recheck(time.time())
            self._mass_changed(was)
            self._schedule_recheck()
            await self._react(new, started)

        self._recheck = self.background.spawn(run())

    # --- the steps -----------------------------------------------------------------------

    async def _reconcile(
        self,
        pool: builders.PoolRef,
        body: Mapping[str, Any],
        *,
        trigger: str,
        fresh_reports: bool,
    ) -> Outcome:
        state = self.state.setdefault(pool.key, PoolState())
        force_verify = trigger in (TRIGGER_SPEC, TRIGGER_CREATE)
        fresh = trigger == TRIGGER_CREATE
        planned: Planned | None = None
        plan_error: str | None = None
        name_error = names.name_problem(pool.name)
        if name_error is not None:
            # Stored before the CRD refused such names: nothing named after it can be
            # made, so nothing is tried (and nothing that runs is touched).
            return await self._write_status(pool, body, state, plan_error=name_error)
        try:
            planned = await self._plan(pool, body)
        except SpecInvalid as exc:
            plan_error = str(exc)

        pods = await self._observe_pods(pool, state)
        # Pods made before the Service selected on the serving label get it first, so the
        # Service never goes empty on an upgrade.
        await self.objects.label_serving(pool, pods)
        if not state.refused.waiting(time.time(), pool.generation):
            ensured = await self.objects.ensure_all(pool, force=force_verify, fresh=fresh)
            state.object_conflicts = ensured.conflicts
            state.secret_owned = ensured.secret_owned
            if ensured.refusal is not None:
                self.pod_actions.refused(pool, body, state, ensured.refusal)
        if fresh_reports:  # a polling pass: a name taken by a stranger may be free again
            await self.objects.recheck_foreign_pods(pool, state)
        conflicts = [*state.object_conflicts] + [
            pool_objects.foreign_pod(pool, name) for name in sorted(state.foreign_pod_names)
        ]

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
                interrupted=self.watch.interrupted(),
                gone_nodes=frozenset(self.watch.gone),
                spot_fallback_seconds=self.config.spot_fallback_seconds,
                reports_fresh=fresh_reports,
            )
            actions = scaling.decide(inputs)
            if state.refused.waiting(time.time(), pool.generation) or not state.secret_owned:
                # Refused before: wait out the back-off. A token Secret of someone else's
                # must never be mounted into the pool's pods.
                actions.create = []
            avoid = tuple(sorted(self.watch.signals))
            pods = await self.pod_actions.act(pool, body, actions, templates, pods, state, avoid)

        self._note_conflicts(pool, body, state, conflicts)
        return await self._write_status(
            pool,
            body,
            state,
            pods=pods,
            planned=planned,
            plan_error=plan_error,
            actions=actions,
            hashes=hashes,
            conflicts=conflicts,
        )

    async def _write_status(
        self,
        pool: builders.PoolRef,
        body: Mapping[str, Any],
        state: PoolState,
        *,
        pods: Sequence[PodView] = (),
        planned: Planned | None = None,
        plan_error: str | None = None,
        actions: Actions | None = None,
        hashes: Mapping[str, str] | None = None,
        conflicts: Sequence[str] = (),
    ) -> Outcome:
        """The status from what this pass observed, written only when it changed."""
        previous = dict(body.get("status") or {})
        observed = status.Observation(
            generation=pool.generation,
            selector=builders.selector_string(pool),
            pods=pods,
            plan=planned.plan if planned else None,
            plan_error=plan_error,
            prices_error=planned.prices_error if planned else None,
            desired_hashes=hashes or {},
            spot_fallback=actions.spot_fallback if actions else 0,
            target_sessions=planned.spec.sessions.target if planned else 0,
            now=time.time(),
            not_ready_timeout_seconds=self.config.not_ready_timeout_seconds,
            create_error=state.refused.message or None,
            conflicts=conflicts,
            nodes_not_ready=self._nodes_not_ready(pool, body, state, pods),
        )
        wanted = status.compute(observed, previous)
        if planned is None and previous.get("plan"):
            wanted["plan"] = previous["plan"]  # keep showing what runs
        self._export_pod_gauges(pool, pods, planned.plan if planned else None)
        if status.changed(wanted, previous):
            if plan_error is not None and _degraded_message(previous) != plan_error:
                self.background.event(body, constants.EVENT_PLAN_INVALID, plan_error, warning=True)
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
        strategy = spec.capacity.strategy
        usable = [
            n
            for n in self.watch.views.values()
            if n.name not in self.watch.signals
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

    async def _observe_pods(self, pool: builders.PoolRef, state: PoolState) -> list[PodView]:
        """The pool's own pods (owner reference to this pool's UID: a pod that merely
        carries the label is someone else's), with their runtimes' last reports."""
        bodies = await self.kube.list(
            "Pod", pool.namespace, labels=f"{constants.LABEL_POOL}={pool.name}"
        )
        views = [
            PodView.from_body(b)
            for b in bodies
            if builders.ordinal_of(pool, b["metadata"]["name"]) is not None
            and builders.owned_by(b, pool)
        ]
        self.last_pods[pool.key] = views
        names = {v.name for v in views}
        for key in [k for k in self.reports if k[0] == pool.namespace and k[1] not in names]:
            if _of_pool(pool.name, key[1]):
                del self.reports[key]
        for name in [n for n in state.drain_failures if n not in names]:
            del state.drain_failures[name]
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

    def _note_conflicts(
        self,
        pool: builders.PoolRef,
        body: Mapping[str, Any],
        state: PoolState,
        conflicts: Sequence[str],
    ) -> None:
        """One event and log line when the pool's name conflicts change."""
        found = tuple(conflicts)
        if found == state.conflicts:
            return
        state.conflicts = found
        if found:
            message = "; ".join(found)
            log.warning("%s: %s", pool.key, message)
            self.background.event(body, constants.EVENT_NAME_CONFLICT, message, warning=True)
        else:
            log.info("%s: no name conflicts any more", pool.key)

    def _nodes_not_ready(
        self,
        pool: builders.PoolRef,
        body: Mapping[str, Any],
        state: PoolState,
        pods: Sequence[PodView],
    ) -> str | None:
        """The mass-NotReady message, for a pool with pods on NotReady nodes meanwhile."""
        mass = self.watch.mass
        down = self.watch.not_ready_nodes()
        note = None
        if mass is not None and any(p.node in down for p in pods if not p.deleting):
            note = mass.describe(self.config.signals.mass_not_ready_fraction)
        if note != state.nodes_not_ready and note is not None:
            self.background.event(body, constants.EVENT_NODES_NOT_READY, note, warning=True)
        state.nodes_not_ready = note
        return note

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


def _of_pool(pool: str, pod_name: str) -> bool:
    rest = pod_name.removeprefix(f"{pool}-")
    return rest != pod_name and rest.isdigit()


def _degraded_message(previous: Mapping[str, Any]) -> str | None:
    for condition in previous.get("conditions") or []:
        if condition.get("type") == constants.CONDITION_DEGRADED:
            return str(condition.get("message", ""))
    return None
