"""Which pods to create, which to drain and which to delete: pure, no I/O.

One function, :func:`decide`, looks at the pool's pods as observed (with what each runtime
reported) and the plan, and answers with actions. The reconcile step carries them out and
the next pass sees the result, so every decision here is safe to make again.

Order of the decisions (each sees the result of the ones before):

1. Pods on an interrupted node start draining (they hold live sessions: never kill them).
2. Draining pods are deleted once empty (and their runtime acknowledged the drain), past
   their deadline, never started, or on a node that is gone; those whose runtime has not
   acknowledged the drain are told again (drains are level-triggered: a call lost to a
   crash or a network error is repeated every poll).
3. Failed pods are deleted, and so are unscheduled pods kept off a node whose signal has
   cleared since (their node affinity is immutable: recreated, they may use it again); both
   are replaced in step 5.
4. Spot pods stuck unschedulable past the fallback time get on-demand stand-ins; when they
   schedule after all, the stand-ins are surplus and drain in step 5 ("back to spot").
5. Per capacity type: create what is missing (a rollout surges at most ``surge`` pods above
   the target), then drain the surplus and outdated pods, fewest live sessions first, and
   only as many serving ones as keep both that type's serving count at its target and the
   pool's serving count, all types together, at the plan's total: a stand-in is given back
   only once the spot pod it stands in for serves, whichever way capacity moves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from voicefleet import constants
from voicefleet.rfc3339 import parse_time

CAPACITY_TYPES: Final = (constants.CapacityType.ON_DEMAND, constants.CapacityType.SPOT)
SURGE_PERCENT: Final = 25
REASON_SCALE_IN: Final = "scale-in"
REASON_ROLLOUT: Final = "rollout"
REASON_EMPTY: Final = "drained"
REASON_DEADLINE: Final = "drain deadline passed"
REASON_NOT_STARTED: Final = "not started"
REASON_NODE_GONE: Final = "node gone"
REASON_FAILED: Final = "failed"
REASON_PLACEMENT: Final = "kept off a node that recovered"
REASON_POOL_DELETED: Final = "pool deleted"


@dataclass(frozen=True)
class PodView:
    """One pool pod, as observed: from its body plus its runtime's last report."""

    name: str
    capacity_type: str
    spec_hash: str
    node: str | None = None
    phase: str = "Pending"
    ip: str | None = None
    ready: bool = False
    deleting: bool = False
    draining: bool = False
    drain_deadline: float | None = None
    drain_reason: str = ""
    unschedulable_since: float | None = None
    created: float = 0.0
    sessions_active: int | None = None  # None: the runtime did not answer
    runtime_loaded: bool = False
    runtime_draining: bool = False
    # Nodes the operator kept this pod off when it made it (interrupted nodes).
    avoid_nodes: frozenset[str] = frozenset()
    # The value of the label the callers' Service selects on (None: absent, an older pod).
    serving_label: str | None = None

    @property
    def running(self) -> bool:
        return self.phase == "Running" and bool(self.ip)

    @property
    def serving(self) -> bool:
        """Takes new sessions or will once a slot frees: Ready, or a full pod that reports a
        loaded model and no drain (``/readyz`` is false while every slot is taken)."""
        if self.draining or self.deleting or not self.running:
            return False
        return self.ready or (self.runtime_loaded and not self.runtime_draining)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        ready = False
        unschedulable_since = None
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Ready":
                ready = condition.get("status") == constants.ConditionStatus.TRUE
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == constants.ConditionStatus.FALSE
                and condition.get("reason") == "Unschedulable"
            ):
                unschedulable_since = parse_time(condition.get("lastTransitionTime"))
        deadline = annotations.get(constants.ANNOTATION_DRAIN_DEADLINE)
        avoid = annotations.get(constants.ANNOTATION_AVOID_NODES, "")
        return cls(
            name=str(meta.get("name", "")),
            capacity_type=str(labels.get(constants.LABEL_CAPACITY_TYPE, "")),
            spec_hash=str(annotations.get(constants.ANNOTATION_SPEC_HASH, "")),
            node=spec.get("nodeName") or None,
            phase=str(status.get("phase") or "Pending"),
            ip=status.get("podIP") or None,
            ready=ready,
            deleting=meta.get("deletionTimestamp") is not None,
            draining=constants.ANNOTATION_DRAINING in annotations,
            drain_deadline=parse_time(deadline) if deadline else None,
            drain_reason=str(annotations.get(constants.ANNOTATION_DRAIN_REASON, "")),
            unschedulable_since=unschedulable_since,
            created=parse_time(meta.get("creationTimestamp")) or 0.0,
            avoid_nodes=frozenset(n for n in avoid.split(",") if n),
            serving_label=labels.get(constants.LABEL_SERVING),
        )


@dataclass(frozen=True)
class Desired:
    """Pods per capacity type, and the spec hash a current pod of each type carries."""

    counts: Mapping[str, int]
    hashes: Mapping[str, str]


@dataclass(frozen=True)
class Drain:
    pod: PodView
    reason: str
    deadline_seconds: int


@dataclass(frozen=True)
class Delete:
    pod: PodView
    reason: str


@dataclass
class Actions:
    create: list[str] = field(default_factory=list)  # capacity type of each new pod
    drain: list[Drain] = field(default_factory=list)
    # Pods already marked draining whose runtime has not acknowledged it: call it again.
    redrain: list[Drain] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    spot_fallback: int = 0  # on-demand stand-ins for stuck spot pods

    @property
    def empty(self) -> bool:
        return not (self.create or self.drain or self.redrain or self.delete)


@dataclass(frozen=True)
class Inputs:
    pods: Sequence[PodView]
    desired: Desired
    now: float
    drain_seconds: int
    interrupted: Mapping[str, str] = field(default_factory=dict)  # node -> why
    gone_nodes: frozenset[str] = frozenset()  # deleted nodes
    spot_fallback_seconds: float = 120.0
    # The runtimes were polled just before this pass, so a draining pod that reports no
    # drain (or does not answer) really has not got the call.
    reports_fresh: bool = False


def _fewest_sessions_first(pods: Sequence[PodView]) -> list[PodView]:
    """Emptiest first; unknown counts last (a silent runtime may be full); newest first on a
    tie, so long-lived pods (warm caches, stable addresses) stay."""

    def key(p: PodView) -> tuple[float, float]:
        active = math.inf if p.sessions_active is None else float(p.sessions_active)
        return active, -p.created

    return sorted(pods, key=key)


def _retire(pod: PodView, reason: str, inputs: Inputs, actions: Actions) -> None:
    """A running pod drains (it may hold sessions); one that never ran is deleted."""
    if pod.running:
        actions.drain.append(Drain(pod, reason, inputs.drain_seconds))
    else:
        actions.delete.append(Delete(pod, REASON_NOT_STARTED))


def _finish_drains(pods: list[PodView], inputs: Inputs, actions: Actions) -> None:
    for pod in pods:
        if not pod.draining or pod.deleting:
            continue
        if pod.node is not None and pod.node in inputs.gone_nodes:
            actions.delete.append(Delete(pod, REASON_NODE_GONE))
        elif not pod.running:
            actions.delete.append(Delete(pod, REASON_NOT_STARTED))
        elif pod.sessions_active == 0 and pod.runtime_draining:
            # Empty, and its runtime refuses new sessions: nobody can be cut. (Empty but not
            # draining yet, a caller could still arrive between the report and the delete.)
            actions.delete.append(Delete(pod, REASON_EMPTY))
        elif pod.drain_deadline is not None and inputs.now >= pod.drain_deadline:
            actions.delete.append(Delete(pod, REASON_DEADLINE))
        elif inputs.reports_fresh and not pod.runtime_draining:
            left = inputs.drain_seconds
            if pod.drain_deadline is not None:
                left = max(0, math.ceil(pod.drain_deadline - inputs.now))
            actions.redrain.append(Drain(pod, pod.drain_reason, left))


def _placed_off_a_recovered_node(pod: PodView, inputs: Inputs) -> bool:
    """An unscheduled pod that avoids a node no longer interrupted: its required node
    affinity can never change, so it would wait forever for capacity that is back."""
    return pod.node is None and bool(pod.avoid_nodes - inputs.interrupted.keys())


def _stuck_spot(pods: Sequence[PodView], inputs: Inputs) -> int:
    return sum(
        1
        for p in pods
        if p.capacity_type == constants.CapacityType.SPOT
        and p.unschedulable_since is not None
        and inputs.now - p.unschedulable_since >= inputs.spot_fallback_seconds
    )


def _per_type(  # noqa: PLR0917
    kind: str,
    want: int,
    live: list[PodView],
    inputs: Inputs,
    actions: Actions,
    pool_budget: list[int],
) -> None:
    """Creates and retirements of one capacity type; ``pool_budget[0]`` is how many serving
    pods the pool as a whole may still lose (shared across the types, spent here)."""
    current_hash = inputs.desired.hashes.get(kind, "")
    cur = [p for p in live if p.spec_hash == current_hash]
    old = [p for p in live if p.spec_hash != current_hash]
    surge = max(1, math.ceil(want * SURGE_PERCENT / 100))

    # 1. Create what is missing; a rollout (old pods still live) surges at most `surge`.
    if len(cur) < want:
        missing = want - len(cur)
        room = want + surge - len(live) if old else missing
        actions.create += [kind] * max(0, min(missing, room))

    # 2. Pods that serve nothing go first: old ones that are not serving, and current ones
    #    beyond the target that are not serving (newest first).
    retired: set[str] = set()
    for pod in old:
        if not pod.serving:
            _retire(pod, REASON_ROLLOUT, inputs, actions)
            retired.add(pod.name)
    extra_cur = len(cur) - want
    for pod in sorted((p for p in cur if not p.serving), key=lambda p: -p.created):
        if extra_cur <= 0:
            break
        _retire(pod, REASON_SCALE_IN, inputs, actions)
        retired.add(pod.name)
        extra_cur -= 1

    # 3. Serving pods: only as many as keep `want` serving (and the pool's total), outdated
    #    ones first.
    serving = [p for p in live if p.serving and p.name not in retired]
    budget = len(serving) - want
    for pod in _fewest_sessions_first([p for p in serving if p.spec_hash != current_hash]):
        if budget <= 0 or pool_budget[0] <= 0:
            return
        _retire(pod, REASON_ROLLOUT, inputs, actions)
        budget -= 1
        pool_budget[0] -= 1
    for pod in _fewest_sessions_first([p for p in serving if p.spec_hash == current_hash]):
        if budget <= 0 or extra_cur <= 0 or pool_budget[0] <= 0:
            return
        _retire(pod, REASON_SCALE_IN, inputs, actions)
        budget -= 1
        extra_cur -= 1
        pool_budget[0] -= 1


def decide(inputs: Inputs) -> Actions:
    """The actions that move the observed pods toward ``inputs.desired`` (see module doc)."""
    actions = Actions()
    pods = [p for p in inputs.pods if not p.deleting]

    # 1. Interrupted nodes: drain what runs there; the rest of this pass already counts
    #    those pods as draining, so their replacements are created in this same pass.
    marked: list[PodView] = []
    for observed in pods:
        why = inputs.interrupted.get(observed.node or "")
        gone = observed.node is not None and observed.node in inputs.gone_nodes
        if observed.draining or (why is None and not gone):
            marked.append(observed)
            continue
        reason = why if why is not None else REASON_NODE_GONE
        if observed.running and not gone:
            actions.drain.append(Drain(observed, reason, inputs.drain_seconds))
            marked.append(replace(observed, draining=True))
        else:
            actions.delete.append(Delete(observed, reason))
            marked.append(replace(observed, deleting=True))

    # 2. and 3.
    _finish_drains(marked, inputs, actions)
    live: list[PodView] = []
    for pod in marked:
        if pod.draining or pod.deleting:
            continue
        if pod.phase in ("Failed", "Succeeded"):
            actions.delete.append(Delete(pod, REASON_FAILED))
            continue
        if _placed_off_a_recovered_node(pod, inputs):
            actions.delete.append(Delete(pod, REASON_PLACEMENT))
            continue
        live.append(pod)

    # 4. Spot fallback.
    counts = dict(inputs.desired.counts)
    stuck = min(_stuck_spot(live, inputs), counts.get(constants.CapacityType.SPOT, 0))
    if stuck:
        counts[constants.CapacityType.ON_DEMAND] = (
            counts.get(constants.CapacityType.ON_DEMAND, 0) + stuck
        )
        actions.spot_fallback = stuck

    # 5. Per capacity type; pods of a type the plan no longer wants are surplus. The pool
    #    may lose serving pods only down to the plan's total (stand-ins not counted).
    pool_budget = [sum(1 for p in live if p.serving) - sum(inputs.desired.counts.values())]
    for kind in CAPACITY_TYPES:
        of_kind = [p for p in live if p.capacity_type == kind]
        _per_type(kind, counts.get(kind, 0), of_kind, inputs, actions, pool_budget)
    for pod in live:
        if pod.capacity_type not in CAPACITY_TYPES:
            _retire(pod, REASON_SCALE_IN, inputs, actions)
    return actions


def free_ordinals(used: set[int], count: int) -> list[int]:
    """The ``count`` smallest ordinals not in ``used`` (pods keep short, stable names)."""
    out: list[int] = []
    n = 0
    while len(out) < count:
        if n not in used:
            out.append(n)
        n += 1
    return out
