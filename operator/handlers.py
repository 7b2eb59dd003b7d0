"""kopf registrations: thin. Each handler hands its event to the :class:`Fleet` and maps
errors to kopf's meaning (invalid spec: permanent). API trouble is left to the pool's
ticker, which retries every interval; the fleet logs it once per change, not per retry.

- pool create / update / resume: reconcile now (kubectl scale lands here too: the scale
  subresource writes ``spec.sessions.target``);
- pool events: keep the latest body, and tick the pool (poll the runtimes and reconcile:
  drain progress, readiness, spot fallback) with a :class:`Ticker` of our own, not a
  ``kopf.timer``: no handler here needs kopf's finalizer, so pools carry none and delete at
  once, with or without the operator; a deleted pool's pods are deleted at once too (the
  garbage collector would, later);
- owned pod events: reconcile that pool soon (coalesced);
- node events: the interruption watcher.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any

import kopf

from voicefleet import constants
from voicefleet.operator.config import OperatorConfig
from voicefleet.operator.fleet import Fleet
from voicefleet.operator.kube import Kube, KubeError, load_credentials
from voicefleet.operator.reconcile import (
    TRIGGER_CREATE,
    TRIGGER_SPEC,
    TRIGGER_TIMER,
)
from voicefleet.operator.runtime_client import RuntimeClient
from voicefleet.operator.ticker import Ticker
from voicefleet.operator.token_key import load_or_create_key

POOL = (constants.GROUP, constants.VERSION, constants.PLURAL)
INDEX_POOL_BODIES = "pool_bodies"
INDEX_PODS_BY_NODE = "pool_pods_by_node"


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's own bookkeeping under our API group, and no chatter as events: a steady
    pool must cause no writes, and kopf would post an event per handler run."""
    # No handler needs a finalizer any more; naming the one older versions added lets kopf
    # remove it from every pool it sees ("no handlers requiring it"), deleting ones too.
    settings.persistence.finalizer = constants.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=constants.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=constants.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = constants.OPERATOR_NAME
    settings.networking.request_timeout = 60
    settings.watching.server_timeout = 300


def _register_indexes(registry: kopf.OperatorRegistry) -> None:
    """What kopf keeps from its watches anyway; the fleet reads these instead of maps of its
    own (each a live view: kopf updates it with every event)."""

    @kopf.index(*POOL, id=INDEX_POOL_BODIES, registry=registry)
    def pool_bodies(
        body: kopf.Body, name: str, namespace: str | None, **_: Any
    ) -> dict[str, kopf.Body]:
        """Each pool's latest body, by "namespace/name"."""
        return {f"{namespace or ''}/{name}": body}

    @kopf.index(
        "",
        "v1",
        "pods",
        labels={constants.LABEL_POOL: kopf.PRESENT},
        id=INDEX_PODS_BY_NODE,
        registry=registry,
    )
    def pool_pods_by_node(
        namespace: str | None, labels: kopf.Labels, spec: kopf.Spec, **_: Any
    ) -> dict[str, tuple[str, str]] | None:
        """(namespace, pool) of each pool pod, by the node it is bound to."""
        node = spec.get("nodeName")
        if not node:
            return None
        return {str(node): (namespace or "", str(labels[constants.LABEL_POOL]))}


def _register_watchers(registry: kopf.OperatorRegistry) -> None:
    """Pod and node events: a pool pod's change pokes its pool; a node's goes to the node
    signals."""

    @kopf.on.event("", "v1", "pods", labels={constants.LABEL_POOL: kopf.PRESENT}, registry=registry)
    async def pod_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        fleet: Fleet = memo["fleet"]
        fleet.pod_changed(type, body)

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def node_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        fleet: Fleet = memo["fleet"]
        try:
            await fleet.on_node(type, body)
        except KubeError as exc:
            # An event handler is not retried by kopf; the pool timers catch up.
            logging.getLogger(__name__).error("node %s: %s", body.get("metadata", {}), exc)


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A registry with every handler; ``config`` comes in through kopf's memo."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own has none of kopf's default login handlers: use the same
        # credentials as the `kubernetes` client (kubeconfig, then the in-cluster account).
        info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
        return info

    _register_indexes(registry)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **indexes: Any) -> None:
        configure(settings)
        # kopf hands its indexes to every handler, startup's included, by their names.
        pool_bodies: kopf.Index[str, kopf.Body] = indexes[INDEX_POOL_BODIES]
        pods_by_node: kopf.Index[str, tuple[str, str]] = indexes[INDEX_PODS_BY_NODE]
        kube = Kube(load_credentials())
        key = await load_or_create_key(kube, config.operator_namespace)
        runtime = RuntimeClient(config.runtime_timeout_seconds, config.runtime_port)
        fleet = Fleet(kube, runtime, config, key, pool_bodies, pods_by_node)
        await fleet.start()
        memo["fleet"] = fleet
        memo["ticker"] = Ticker(config.poll_interval_seconds, functools.partial(tick, fleet))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        ticker: Ticker | None = memo.get("ticker")
        if ticker is not None:
            await ticker.close()
        fleet: Fleet | None = memo.get("fleet")
        if fleet is not None:
            await fleet.close()

    @kopf.on.resume(*POOL, registry=registry)
    @kopf.on.create(*POOL, registry=registry)
    @kopf.on.update(*POOL, registry=registry)
    async def reconcile_pool(
        body: kopf.Body, reason: str, retry: int, memo: kopf.Memo, **_: Any
    ) -> None:
        fleet: Fleet = memo["fleet"]
        # A first try at a create may skip reading objects that cannot exist yet.
        trigger = TRIGGER_CREATE if reason == kopf.Reason.CREATE and retry == 0 else TRIGGER_SPEC
        try:
            outcome = await fleet.reconcile(body, trigger=trigger)
        except KubeError:
            # Logged once per change by the fleet; the pool's ticker retries from the latest
            # body (a kopf retry would log an ERROR every 2 s through an API outage).
            return
        if outcome.plan_error is not None:
            # The condition (Degraded/PlanInvalid) tells the user; retrying cannot help
            # until the spec changes, which runs this handler again.
            raise kopf.PermanentError(outcome.plan_error)

    @kopf.on.event(*POOL, registry=registry)
    async def pool_seen(
        type: str | None,
        body: kopf.Body,
        name: str,
        namespace: str | None,
        memo: kopf.Memo,
        **_: Any,
    ) -> None:
        fleet: Fleet = memo["fleet"]
        ticker: Ticker = memo["ticker"]
        key = f"{namespace or ''}/{name}"
        if type == "DELETED":
            ticker.stop(key)
            fleet.forget(namespace or "", name)
            fleet.background.spawn(fleet.remove_pods(body))
        elif body.get("metadata", {}).get("deletionTimestamp"):
            ticker.stop(key)  # another finalizer holds it; nothing left to keep up
        else:
            ticker.start(key)

    _register_watchers(registry)
    return registry


async def tick(fleet: Fleet, key: str) -> None:
    """The periodic reconcile of one pool, from the body the watch showed last."""
    body = fleet.body(key)
    if body is None:
        return
    # A KubeError is logged once per change by the fleet; the next tick retries.
    with contextlib.suppress(KubeError):
        await fleet.reconcile(body, trigger=TRIGGER_TIMER, poll=True)
