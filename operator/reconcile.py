"""One pass over one VoiceAgentPool: ordered, idempotent ensure steps, then status.

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
   plan is invalid, so bad input never deletes anything that runs; writes the API server
   refuses wait with a back-off (``pool_state.Refusals``); before it creates pods, the pass
   reads the pool once more and does nothing if it was deleted since the pass read it (its
   pods are then going with it, not to be replaced);
5. the status, computed from what was observed and written only when it changed.

A pass holds no state of its own: what it needs of the nodes, the runtimes and the pool's
past comes in (``fleet.Fleet`` keeps it), so an operator restarted mid-pass lists the pods
again, and pod names are ordinals: a create that already happened answers "already exists"
instead of making a twin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from voicefleet import catalog, constants
from voicefleet.api import names
from voicefleet.api.manifest import describe
from voicefleet.api.pool import GPU_AUTO, VoiceAgentPoolSpec
from voicefleet.api.status import PlanStatus
from voicefleet.operator import builders, interruption, metrics, pool_objects, scaling, status
from voicefleet.operator.api_protocols import KubeApi
from voicefleet.operator.background import Background
from voicefleet.operator.config import OperatorConfig
from voicefleet.operator.gateway_reports import GatewayReports
from voicefleet.operator.nodes import NodeWatch
from voicefleet.operator.planner import PlanError, plan
from voicefleet.operator.pod_actions import PodActions
from voicefleet.operator.pool_objects import PoolObjects
from voicefleet.operator.pool_state import PoolState
from voicefleet.operator.runtime_reports import RuntimeReports
from voicefleet.operator.scaling import Actions, PodView

log = logging.getLogger(__name__)

TRIGGER_CREATE: Final = "create"
TRIGGER_SPEC: Final = "spec"
TRIGGER_TIMER: Final = "timer"
TRIGGER_NODE: Final = "node"
TRIGGER_POD: Final = "pod"


class SpecInvalid(Exception):
    """The pool cannot be planned; ``message`` says what to change."""


@dataclass(frozen=True)
class Outcome:
    """What one pass did: its actions, or the reason the pool could not be planned."""

    actions: Actions | None = None
    plan_error: str | None = None


@dataclass(frozen=True)
class Planned:
    spec: VoiceAgentPoolSpec  # with gpu.product resolved when it was "auto"
    plan: PlanStatus
    prices_error: str | None


class PoolPass:
    """The pass over one pool (see the module docstring), with what it needs around it."""

    def __init__(  # noqa: PLR0917
        self,
        kube: KubeApi,
        config: OperatorConfig,
        watch: NodeWatch,
        reports: RuntimeReports,
        objects: PoolObjects,
        pod_actions: PodActions,
        background: Background,
        gateways: GatewayReports,
    ) -> None:
        self.gateways = gateways
        self.kube = kube
        self.config = config
        self.watch = watch
        self.reports = reports
        self.objects = objects
        self.pod_actions = pod_actions
        self.background = background

    async def run(
        self,
        pool: builders.PoolRef,
        body: Mapping[str, Any],
        state: PoolState,
        *,
        trigger: str,
        fresh_reports: bool,
    ) -> Outcome:
        """One pass; ``fresh_reports``: the runtimes were polled just before it."""
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
            ensured = await self.objects.ensure_all(
                pool,
                planned.spec if planned is not None else None,
                force=force_verify,
                fresh=fresh,
                settings=self.config.pods,
            )
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
            templates: dict[str, dict[str, Any]] = {
                kind: builders.build_pod_template(
                    pool,
                    planned.spec,
                    planned.plan,
                    kind,
                    planned.spec.gpu.product,
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
                        constants.CapacityType.ON_DEMAND: planned.plan.on_demand_replicas,
                        constants.CapacityType.SPOT: planned.plan.spot_replicas,
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
            if actions.create and not await self._still_exists(pool):
                # Deleted since this pass read it: what it listed is the pool's pods going
                # with it, not pods to replace.
                log.debug("%s: deleted during the pass; no pods made", pool.key)
                return Outcome()
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

    async def _still_exists(self, pool: builders.PoolRef) -> bool:
        """The pool is still there, the same one (its UID) and not being deleted, as the API
        server says after the pods were listed.

        Why a read of its own, before creating pods: the body a pass runs on was read
        before it started (kopf's index, a poke, a tick), and a pool deleted meanwhile has
        its pods deleted by the operator and the garbage collector, maybe before this
        operator's watch shows the deletion. The pass then lists the pod terminating (or
        gone) and would make a replacement: a second pod owned by a deleted pool, removed
        again by the garbage collector. Anything that deletes a pod for the pool's
        deletion does so after the pool is gone, and this read comes after the list that
        saw it: it sees the pool gone.
        """
        live = await self.kube.get(constants.KIND, pool.namespace, pool.name)
        if live is None:
            return False
        meta = live.get("metadata") or {}
        return meta.get("uid") == pool.uid and not meta.get("deletionTimestamp")

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
            gateway=self.gateways.summary(pool)
            if planned is not None and planned.spec.gateway.enabled
            else None,
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
        if spec.gpu.product == GPU_AUTO:
            gpu_product = await self._auto_gpu(spec)
            spec = spec.model_copy(
                update={"gpu": spec.gpu.model_copy(update={"product": gpu_product})}
            )
        prices, prices_error = await self._prices(pool, spec)
        try:
            planned = plan(spec, self.config.catalog, prices)
        except PlanError as exc:
            raise SpecInvalid(str(exc)) from exc
        return Planned(spec, planned, prices_error)

    async def _auto_gpu(self, spec: VoiceAgentPoolSpec) -> str:
        """``gpu.product: auto``: the product most of the pool's usable nodes report."""
        strategy = spec.capacity.strategy
        usable = [
            n
            for n in self.watch.views.values()
            if n.name not in self.watch.signals
            and (
                strategy == constants.Strategy.SPOT_FIRST
                or interruption.is_spot(n.labels) == (strategy == constants.Strategy.SPOT_ONLY)
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
            return self.config.catalog.prices, None
        found = await self.kube.get("ConfigMap", pool.namespace, name)
        origin = f"ConfigMap {pool.namespace}/{name}"
        if found is None:
            return self.config.catalog.prices, f"{origin} not found"
        text = (found.get("data") or {}).get(constants.PRICES_CONFIGMAP_KEY)
        if text is None:
            key = constants.PRICES_CONFIGMAP_KEY
            return self.config.catalog.prices, f"{origin} has no key {key}"
        try:
            table = catalog.parse_prices(text, origin)
        except catalog.CatalogError as exc:
            return self.config.catalog.prices, str(exc)
        return table.merged_over(self.config.catalog.prices), None

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
        # The gateway's pods belong to its Deployment's ReplicaSets, not to the pool; one
        # that only copies their labels gets a push it cannot use (signed, no token in it).
        self.gateways.seen(
            pool,
            [
                PodView.from_body(b)
                for b in bodies
                if (b["metadata"].get("labels") or {}).get(constants.LABEL_COMPONENT)
                == constants.COMPONENT_GATEWAY
            ],
        )
        names = {v.name for v in views}
        for name in [n for n in state.drain_failures if n not in names]:
            del state.drain_failures[name]
        return self.reports.seen(pool, views)

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
        for capacity in (constants.CapacityType.SPOT, constants.CapacityType.ON_DEMAND):
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


def _degraded_message(previous: Mapping[str, Any]) -> str | None:
    for condition in previous.get("conditions") or []:
        if condition.get("type") == constants.CONDITION_DEGRADED:
            return str(condition.get("message", ""))
    return None
