"""Which node signals mean "this node is going away": pure, no I/O.

The table follows REFERENCE.md's list of interruption signals per source. Each entry is a
taint key, a label key (optionally with a value) or one of the node-wide conditions
(cordon, NotReady, deletion). The key list is configurable (``--interruption-taint`` and
``--interruption-label`` on ``voicefleet operator run``) because clusters run their own
termination handlers; the defaults cover aws-node-termination-handler, Karpenter, Cluster
Autoscaler, GKE and AKS.

NotReady is judged, not taken at its word (as kube-controller-manager does before it evicts):

1. a NotReady node is an interruption only once it has stayed NotReady for a grace period
   (``not_ready_grace_seconds``): a kubelet restart or a missed heartbeat must not drain a
   node full of live conversations;
2. when a large share of all nodes is NotReady at once (``mass_not_ready``, after
   kube-controller-manager's ``--unhealthy-zone-threshold``: at least 55% and at least 3
   nodes), the cause is the control plane or the network, not reclaims: NotReady then drains
   nothing. Explicit signals (taints, labels, cordon, deletion) still count.

Capacity type: the same module tells spot from on-demand nodes by the well-known labels of
Karpenter, EKS, GKE and AKS, so the builders and the watcher agree on one list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from voicefleet import constants
from voicefleet.rfc3339 import parse_time

# --- signal kinds (also the reasons written on drained pods and in events) -----------------
KIND_TAINT: Final = "taint"
KIND_LABEL: Final = "label"
KIND_CORDON: Final = "cordon"
KIND_NOT_READY: Final = "not-ready"
KIND_DELETED: Final = "deleted"

ANTH_PREFIX: Final = "aws-node-termination-handler"
# Taints that announce removal. PreferNoSchedule candidates of Cluster Autoscaler are only a
# hint (the node may stay for hours), so they are not in the default list.
DEFAULT_TAINTS: Final[tuple[str, ...]] = (
    f"{ANTH_PREFIX}/spot-itn",
    f"{ANTH_PREFIX}/rebalance-recommendation",
    f"{ANTH_PREFIX}/scheduled-maintenance",
    f"{ANTH_PREFIX}/asg-lifecycle-termination",
    "karpenter.sh/disrupted",
    "karpenter.sh/disruption",
    "ToBeDeletedByClusterAutoscaler",
    "cloud.google.com/impending-node-termination",
    "node.kubernetes.io/out-of-service",
)
# Labels whose presence announces removal; aws-node-termination-handler sets these three
# together, the action label alone is enough.
DEFAULT_LABELS: Final[tuple[str, ...]] = (f"{ANTH_PREFIX}/action",)
# The kubelet and node lifecycle controller put these on a node whose kubelet stopped
# reporting; they are NotReady, handled by the condition check rather than as a taint.
TAINT_UNREACHABLE: Final = "node.kubernetes.io/unreachable"
TAINT_NOT_READY: Final = "node.kubernetes.io/not-ready"

# Spot capacity labels: (key, value that means spot). AKS puts a taint of the same key on
# spot nodes, which pods on spot must tolerate.
SPOT_LABELS: Final[tuple[tuple[str, str], ...]] = (
    (constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE, constants.CapacityType.SPOT),
    (constants.NODE_LABEL_EKS_CAPACITY_TYPE, constants.EKS_CAPACITY_SPOT),
    (constants.NODE_LABEL_GKE_SPOT, "true"),
    (constants.NODE_LABEL_GKE_PREEMPTIBLE, "true"),
    (constants.NODE_LABEL_AKS_PRIORITY, constants.CapacityType.SPOT),
)


# A node NotReady for less than this is a blip (a kubelet restart, a lost heartbeat), not a
# reclaim. Kubernetes itself waits 40-50 s (node-monitor-grace-period) before it even marks a
# silent node NotReady, and 300 s before it evicts; 30 s more keeps a blip from draining live
# conversations while a node that really died is still replaced well before eviction.
DEFAULT_NOT_READY_GRACE_SECONDS: Final = 30.0
# kube-controller-manager's --unhealthy-zone-threshold (0.55) and its minimum of 3 nodes.
DEFAULT_MASS_NOT_READY_FRACTION: Final = 0.55
MASS_NOT_READY_MIN_NODES: Final = 3


@dataclass(frozen=True)
class SignalConfig:
    """Which taint and label keys count as an interruption notice, and how NotReady is
    judged."""

    taints: tuple[str, ...] = DEFAULT_TAINTS
    labels: tuple[str, ...] = DEFAULT_LABELS
    cordon: bool = True
    not_ready_grace_seconds: float = DEFAULT_NOT_READY_GRACE_SECONDS
    mass_not_ready_fraction: float = DEFAULT_MASS_NOT_READY_FRACTION


@dataclass(frozen=True)
class Signal:
    """One reason a node is going away: its kind and the key (or condition) that said so."""

    kind: str
    key: str = ""

    def describe(self) -> str:
        return f"{self.kind} {self.key}".strip()


@dataclass(frozen=True)
class NodeView:
    """What the operator needs of a Node, read once from its body."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[tuple[str, str], ...] = ()  # (key, effect)
    unschedulable: bool = False
    ready: bool = True
    # Since when the node is NotReady (epoch seconds), as its Ready condition or its
    # not-ready/unreachable taint says; None when ready or when nothing says since when.
    not_ready_since: float | None = None

    @property
    def not_ready(self) -> bool:
        taint_keys = {key for key, _effect in self.taints}
        return not self.ready or bool(taint_keys & {TAINT_UNREACHABLE, TAINT_NOT_READY})

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NodeView:
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        ready = True
        since: list[float] = []
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Ready":
                ready = condition.get("status") == constants.ConditionStatus.TRUE
                if not ready:
                    since += _times(condition.get("lastTransitionTime"))
        taints = tuple(
            (str(t.get("key", "")), str(t.get("effect", ""))) for t in spec.get("taints") or []
        )
        for taint in spec.get("taints") or []:
            if taint.get("key") in (TAINT_UNREACHABLE, TAINT_NOT_READY):
                since += _times(taint.get("timeAdded"))
        return cls(
            name=str(metadata.get("name", "")),
            labels=dict(metadata.get("labels") or {}),
            taints=taints,
            unschedulable=bool(spec.get("unschedulable", False)),
            ready=ready,
            not_ready_since=min(since) if since else None,
        )


def _times(text: Any) -> list[float]:
    parsed = parse_time(str(text)) if text else None
    return [] if parsed is None else [parsed]


def signals(
    node: NodeView,
    config: SignalConfig = SignalConfig(),
    *,
    now: float,
    mass_not_ready: bool = False,
) -> list[Signal]:
    """Every interruption signal ``node`` shows at ``now``, in a stable order; empty when it
    stays. NotReady counts once it has lasted the grace period (from ``not_ready_since``;
    unknown: not yet), and never while ``mass_not_ready`` (see the module docstring)."""
    found: list[Signal] = []
    taint_keys = {key for key, _effect in node.taints}
    for key in config.taints:
        if key in taint_keys:
            found.append(Signal(KIND_TAINT, key))
    for key in config.labels:
        if key in node.labels:
            found.append(Signal(KIND_LABEL, key))
    if config.cordon and node.unschedulable:
        found.append(Signal(KIND_CORDON))
    if node.not_ready and not mass_not_ready and not_ready_grace_left(node, config, now) == 0:
        found.append(Signal(KIND_NOT_READY))
    return found


def not_ready_grace_left(node: NodeView, config: SignalConfig, now: float) -> float | None:
    """Seconds until a NotReady ``node`` counts as interrupted (0: it does now); None when it
    is ready or nothing says since when it is NotReady."""
    if not node.not_ready or node.not_ready_since is None:
        return None
    return max(0.0, node.not_ready_since + config.not_ready_grace_seconds - now)


def mass_not_ready(not_ready: int, total: int, config: SignalConfig) -> bool:
    """True when so many nodes are NotReady at once that the cause must be the control
    plane or the network (kube-controller-manager's unhealthy-zone rule)."""
    return not_ready >= MASS_NOT_READY_MIN_NODES and not_ready >= (
        config.mass_not_ready_fraction * total
    )


def is_spot(labels: Mapping[str, str]) -> bool:
    """True when any well-known capacity label marks the node as spot (or preemptible)."""
    return any(labels.get(key, "").lower() == value.lower() for key, value in SPOT_LABELS)


def gpu_products(nodes: Sequence[NodeView]) -> dict[str, int]:
    """GPU products the nodes report (GPU feature discovery's label), with node counts."""
    counts: dict[str, int] = {}
    for node in nodes:
        product = node.labels.get(constants.NODE_LABEL_GPU_PRODUCT)
        if product:
            counts[product] = counts.get(product, 0) + 1
    return counts


def parse_keys(values: Sequence[str], default: tuple[str, ...]) -> tuple[str, ...]:
    """A key list from the command line: none given keeps the default; ``+key`` adds to it."""
    if not values:
        return default
    if all(v.startswith("+") for v in values):
        return default + tuple(v[1:] for v in values)
    return tuple(v.lstrip("+") for v in values)
