"""The operator's parts, put together, and the ways in: a pool event, a pod event, a node
event, a tick.

- ``reconcile.PoolPass``: one pass over one pool (ordered ensure steps, then status);
- ``node_signals.NodeSignals``: node events in, pools reconciled at once out;
- ``runtime_reports.RuntimeReports``: what each runtime pod last said;
- ``pool_objects.PoolObjects`` and ``pod_actions.PodActions``: the writes;
- ``background.Background``: tasks, and Events (aggregated, ``events.py``).

What kopf already keeps comes from kopf's in-memory indexes, not from maps of our own: the
latest body of each pool, and which pools have pods on which node. What the fleet keeps per
pool (a lock, ``PoolState``, runtime reports, applied hashes, pod-event digests) is dropped
with the pool (:meth:`Fleet.forget`); :meth:`Fleet.kept_pools` says what is left, for the
tests that check nothing outlives its pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from voicefleet import constants
from voicefleet.operator import builders, metrics, scaling
from voicefleet.operator.api_protocols import GatewayApi, KubeApi, RuntimeApi
from voicefleet.operator.background import Background
from voicefleet.operator.config import OperatorConfig
from voicefleet.operator.gateway_client import GatewayClient
from voicefleet.operator.gateway_reports import GatewayReports, backend_urls
from voicefleet.operator.kube import KubeError
from voicefleet.operator.node_signals import NodeSignals, PodsByNode
from voicefleet.operator.pod_actions import PodActions
from voicefleet.operator.pool_objects import PoolObjects
from voicefleet.operator.pool_state import PoolState
from voicefleet.operator.reconcile import TRIGGER_NODE, TRIGGER_POD, Outcome, PoolPass
from voicefleet.operator.runtime_reports import RuntimeReports
from voicefleet.operator.scaling import PodView

log = logging.getLogger(__name__)

POKE_DELAY_SECONDS: Final = 0.25
POD_STATES: Final = ("serving", "starting", "draining")

# "namespace/name" -> the pool's body (one) as kopf's watch last showed it
PoolBodies = Mapping[str, Collection[Mapping[str, Any]]]


class Fleet:
    """Everything the operator knows between passes, and the entry points."""

    def __init__(  # noqa: PLR0917
        self,
        kube: KubeApi,
        runtime: RuntimeApi,
        config: OperatorConfig,
        key: bytes,
        pool_bodies: PoolBodies,
        pods_by_node: PodsByNode,
        gateway_client: GatewayApi | None = None,
    ) -> None:
        self.kube = kube
        self.runtime = runtime
        self.config = config
        self.pool_bodies = pool_bodies
        self.background = Background(kube)
        self.reports = RuntimeReports(runtime)
        self.gateway_client = gateway_client or GatewayClient(
            config.runtime_timeout_seconds, config.runtime_port
        )
        self.gateways = GatewayReports(self.gateway_client, key)
        self.objects = PoolObjects(kube, key)
        self.pod_actions = PodActions(
            kube, runtime, self.background, key, config.spot_fallback_seconds
        )
        self.nodes = NodeSignals(config.signals, self.background, pods_by_node, self._react)
        self.passes = PoolPass(
            kube,
            config,
            self.nodes.watch,
            self.reports,
            self.objects,
            self.pod_actions,
            self.background,
            self.gateways,
        )
        self.closed = False
        self._locks: dict[str, asyncio.Lock] = {}
        self._states: dict[str, PoolState] = {}
        self._pending: set[str] = set()
        self._pod_digests: dict[tuple[str, str], tuple[Any, ...]] = {}

    async def start(self) -> None:
        """Read every node once before any node event is acted on (``NodeWatch.seed``)."""
        self.nodes.seed(await self.kube.list("Node"))

    async def close(self) -> None:
        self.closed = True
        self.nodes.close()
        await self.background.close()
        await self.runtime.close()
        await self.gateway_client.close()
        await self.kube.close()

    # --- entry points --------------------------------------------------------------------

    async def reconcile(
        self,
        body: Mapping[str, Any],
        *,
        trigger: str,
        poll: bool = True,
        on_locked: Callable[[], None] | None = None,
    ) -> Outcome:
        """One pass over one pool; what it did."""
        meta = body.get("metadata") or {}
        if self.closed:
            return Outcome()  # the operator is stopping; a tick may still fire once
        if meta.get("deletionTimestamp"):
            return Outcome()  # garbage collection removes the rest (owner references)
        pool = builders.PoolRef.from_body(dict(body))
        lock = self._locks.setdefault(pool.key, asyncio.Lock())
        metrics.POOLS.set(len(self._locks))
        started = time.monotonic()
        if poll:
            # Ask the runtimes first, outside the lock: a slow pod must not hold up a node
            # reaction waiting for the same pool.
            await asyncio.gather(
                self.reports.poll(pool),
                self.gateways.push(
                    pool, backend_urls(self.reports.views(pool), self.config.runtime_port)
                ),
            )
        async with lock:
            if on_locked is not None:
                on_locked()
            state = self._states.setdefault(pool.key, PoolState())
            try:
                outcome = await self.passes.run(
                    pool, body, state, trigger=trigger, fresh_reports=poll
                )
            except KubeError as exc:
                if exc.namespace_terminating:
                    # The namespace (and so the pool) is going away; nothing to keep up.
                    return Outcome()
                metrics.RECONCILE_ERRORS.labels(trigger).inc()
                _api_trouble(pool, state, exc)
                raise
            except Exception:
                metrics.RECONCILE_ERRORS.labels(trigger).inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.labels(trigger).observe(time.monotonic() - started)
                if self._locks.get(pool.key) is not lock:
                    # Deleted while this pass ran: drop what the pass kept after all.
                    self._drop(pool.namespace, pool.name)
            _api_trouble(pool, state, None)
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
        """The pool as kopf's watch last showed it (no request on the interruption path);
        read from the API only for a pool the watch has not shown yet."""
        body = self.body(f"{namespace}/{name}")
        if body is None:
            body = await self.kube.get(constants.KIND, namespace, name)
        if body is None:
            if on_locked is not None:
                on_locked()
            return Outcome()
        return await self.reconcile(body, trigger=trigger, poll=poll, on_locked=on_locked)

    def body(self, key: str) -> Mapping[str, Any] | None:
        """The pool's body from kopf's index, if the watch has shown it."""
        for body in self.pool_bodies.get(key, ()):
            return body
        return None

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
                # ready); one pass a moment later sees them all. This runs in a task of
                # its own, never in a kopf handler.
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

    async def on_node(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        await self.nodes.seen(event_type, body)

    def forget(self, namespace: str, name: str) -> None:
        """Drop everything kept for a deleted pool (nothing may outlive it; a pass still
        running for it drops what it kept when it ends)."""
        self._locks.pop(f"{namespace}/{name}", None)
        self._drop(namespace, name)

    def _drop(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self._states.pop(key, None)
        self._pending.discard(key)
        self.reports.forget(key)
        self.gateways.forget(key)
        self.objects.forget(key)
        for pod_key in [k for k in self._pod_digests if k[0] == namespace and _of(name, k[1])]:
            del self._pod_digests[pod_key]
        for state_name in POD_STATES:
            _remove_gauge(metrics.PODS, namespace, name, state_name)
        for capacity in (constants.CapacityType.SPOT, constants.CapacityType.ON_DEMAND):
            _remove_gauge(metrics.POOL_REPLICAS, namespace, name, capacity)
        _remove_gauge(metrics.POOL_COST_PER_SESSION_HOUR, namespace, name)
        metrics.POOLS.set(len(self._locks))

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

    def kept_pools(self) -> set[str]:
        """Every pool anything is kept for (a deleted pool must not be among them)."""
        pods = {f"{ns}/{name.rsplit('-', 1)[0]}" for ns, name in self._pod_digests}
        return (
            set(self._locks)
            | set(self._states)
            | self._pending
            | self.reports.pools()
            | self.objects.pools()
            | pods
        )

    async def _react(self, namespace: str, name: str) -> None:
        await self.reconcile_by_name(namespace, name, trigger=TRIGGER_NODE)


def _api_trouble(pool: builders.PoolRef, state: PoolState, error: KubeError | None) -> None:
    """One log line when a pool's passes start failing against the API (and what kind of
    failure), and one when they work again: never one per retry."""
    kind = None if error is None else f"HTTP {error.status} {error.reason}".strip()
    if kind == state.api_trouble:
        return
    if error is not None:
        log.warning("%s: reconcile failed (%s); retried on every tick", pool.key, error)
    elif state.api_trouble is not None:
        log.info("%s: reconciles work again", pool.key)
    state.api_trouble = kind


def _of(pool: str, pod_name: str) -> bool:
    rest = pod_name.removeprefix(f"{pool}-")
    return rest != pod_name and rest.isdigit()


def _remove_gauge(gauge: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set for this pool
        gauge.remove(*labels)
