"""Node interruption signals: every source in REFERENCE.md's table, nodes that stay, and
NotReady judged (a grace period; a mass outage drains nothing), in the pure rules and in
``NodeWatch``, which follows them over a stream of node events."""

from __future__ import annotations

from typing import Any

import pytest

from voicefleet import constants
from voicefleet.operator import interruption
from voicefleet.operator.interruption import NodeView, SignalConfig
from voicefleet.operator.nodes import NodeWatch
from voicefleet.rfc3339 import format_time

NOW = 1_800_000_000.0
GRACE = interruption.DEFAULT_NOT_READY_GRACE_SECONDS


def signals(view: NodeView, config: SignalConfig | None = None) -> list[interruption.Signal]:
    """The signals long after any grace period (what a node shows, judged at leisure)."""
    return interruption.signals(view, config or SignalConfig(), now=NOW + 10 * GRACE)


def stamp(epoch: float) -> str:
    return format_time(epoch)


def node(name: str = "n1", since: float | None = NOW, **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {})
    ready = spec.pop("ready", "True")
    condition: dict[str, Any] = {"type": "Ready", "status": ready}
    if since is not None:
        condition["lastTransitionTime"] = stamp(since)
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"conditions": [condition]},
    }


def taint(key: str, effect: str = "NoSchedule") -> dict[str, Any]:
    return {"taints": [{"key": key, "effect": effect}]}


@pytest.mark.parametrize(
    "key",
    [
        "aws-node-termination-handler/spot-itn",
        "aws-node-termination-handler/rebalance-recommendation",
        "aws-node-termination-handler/scheduled-maintenance",
        "aws-node-termination-handler/asg-lifecycle-termination",
        "karpenter.sh/disrupted",
        "karpenter.sh/disruption",
        "ToBeDeletedByClusterAutoscaler",
        "cloud.google.com/impending-node-termination",
    ],
)
def test_each_known_taint_is_a_signal(key: str) -> None:
    found = signals(NodeView.from_body(node(**taint(key))))
    assert [(s.kind, s.key) for s in found] == [(interruption.KIND_TAINT, key)]


def test_termination_handler_action_label_is_a_signal() -> None:
    body = node(labels={"aws-node-termination-handler/action": "spot-itn"})
    assert [s.kind for s in signals(NodeView.from_body(body))] == [interruption.KIND_LABEL]


def test_cordon_and_not_ready_are_signals() -> None:
    assert [s.kind for s in signals(NodeView.from_body(node(unschedulable=True)))] == [
        interruption.KIND_CORDON
    ]
    assert [s.kind for s in signals(NodeView.from_body(node(ready="Unknown")))] == [
        interruption.KIND_NOT_READY
    ]


def test_a_healthy_spot_node_and_soft_hints_are_not_signals() -> None:
    body = node(
        labels={constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE: "spot"},
        **taint("DeletionCandidateOfClusterAutoscaler", "PreferNoSchedule"),
    )
    assert signals(NodeView.from_body(body)) == []


def test_the_key_list_is_configurable() -> None:
    body = node(**taint("example.com/going-away"))
    assert signals(NodeView.from_body(body)) == []
    config = SignalConfig(taints=("example.com/going-away",), labels=(), cordon=False)
    assert len(signals(NodeView.from_body(body), config)) == 1
    assert signals(NodeView.from_body(node(unschedulable=True)), config) == []


def test_not_ready_is_a_signal_only_once_it_has_lasted_the_grace_period() -> None:
    view = NodeView.from_body(node(ready="False", since=NOW))
    assert view.not_ready_since == NOW
    assert interruption.signals(view, now=NOW + GRACE - 1) == []
    assert [s.kind for s in interruption.signals(view, now=NOW + GRACE)] == [
        interruption.KIND_NOT_READY
    ]
    # Nothing says since when: not yet (the watcher supplies when it first saw it).
    unknown = NodeView.from_body(node(ready="Unknown", since=None))
    assert interruption.signals(unknown, now=NOW + 10 * GRACE) == []


def test_the_unreachable_taints_time_counts_as_not_ready_since() -> None:
    body = node(
        since=None,
        taints=[
            {"key": interruption.TAINT_UNREACHABLE, "effect": "NoSchedule", "timeAdded": stamp(NOW)}
        ],
    )
    view = NodeView.from_body(body)
    assert view.not_ready and view.not_ready_since == NOW
    assert interruption.signals(view, now=NOW + 1) == []
    assert len(interruption.signals(view, now=NOW + GRACE)) == 1


def test_a_mass_outage_is_not_an_interruption_but_explicit_signals_still_are() -> None:
    tainted = NodeView.from_body(node(ready="False", **taint("karpenter.sh/disrupted")))
    found = interruption.signals(tainted, now=NOW + 10 * GRACE, mass_not_ready=True)
    assert [s.kind for s in found] == [interruption.KIND_TAINT]


@pytest.mark.parametrize(
    ("down", "total", "mass"),
    [(1, 1, False), (2, 2, False), (3, 3, True), (3, 6, False), (4, 7, True), (6, 10, True)],
)
def test_mass_not_ready_needs_at_least_three_nodes_and_55_percent(
    down: int, total: int, mass: bool
) -> None:
    assert interruption.mass_not_ready(down, total, SignalConfig()) is mass


def _watch(count: int) -> NodeWatch:
    watch = NodeWatch(SignalConfig())
    watch.seed([node(f"n{i}") for i in range(count)], NOW)
    return watch


def test_the_watch_reports_not_ready_when_its_grace_ends_with_no_event() -> None:
    watch = _watch(7)
    assert watch.seen("MODIFIED", node("n1", ready="False", since=NOW), NOW) == {}
    assert watch.next_check(NOW) == NOW + GRACE
    assert watch.recheck(NOW + GRACE - 1) == {}
    found = watch.recheck(NOW + GRACE)
    assert [s.kind for s in found["n1"]] == [interruption.KIND_NOT_READY]
    assert "n1" in watch.interrupted()
    # Ready again: the signal clears.
    assert watch.seen("MODIFIED", node("n1"), NOW + GRACE + 1) == {}
    assert watch.interrupted() == {}


def test_a_blip_shorter_than_the_grace_never_becomes_a_signal() -> None:
    watch = _watch(7)
    watch.seen("MODIFIED", node("n2", ready="False", since=NOW), NOW)
    watch.seen("MODIFIED", node("n2"), NOW + 5)
    assert watch.next_check(NOW + 5) is None
    assert watch.recheck(NOW + 10 * GRACE) == {}


def test_a_mass_outage_drains_nothing_and_recovery_judges_nodes_again() -> None:
    watch = _watch(7)
    for i in range(7):
        assert watch.seen("MODIFIED", node(f"n{i}", ready="False", since=NOW), NOW) == {}
    mass = watch.mass
    assert mass is not None and (mass.not_ready, mass.total) == (7, 7)
    assert watch.next_check(NOW) is None
    assert watch.recheck(NOW + 10 * GRACE) == {}
    # Most nodes come back, one by one: the outage is over once fewer than 55% are down
    # (at n3), and the stragglers get a fresh grace period from then: n4, back a moment
    # later, is never flagged; n5 and n6, still down a grace period later, are.
    later = NOW + 10 * GRACE
    new: dict[str, Any] = {}
    for i in range(5):
        new |= watch.seen("MODIFIED", node(f"n{i}"), later + i)
    assert watch.mass is None
    assert new == {}
    assert watch.next_check(later + 4) == later + 3 + GRACE
    assert sorted(watch.recheck(later + 3 + GRACE)) == ["n5", "n6"]


def test_a_node_whose_not_ready_time_is_unknown_counts_from_when_it_was_first_seen() -> None:
    watch = _watch(7)
    watch.seen("MODIFIED", node("n3", ready="Unknown", since=None), NOW)
    watch.seen("MODIFIED", node("n3", ready="Unknown", since=None), NOW + 20)
    assert watch.next_check(NOW + 20) == NOW + GRACE
    assert "n3" in watch.recheck(NOW + GRACE)


def test_a_deleted_node_is_a_signal_and_remembered_as_gone() -> None:
    watch = _watch(3)
    found = watch.seen("DELETED", node("n0"), NOW)
    assert [s.kind for s in found["n0"]] == [interruption.KIND_DELETED]
    assert "n0" in watch.gone and "n0" not in watch.views


def test_parse_keys_replaces_or_extends_the_default() -> None:
    default = ("a", "b")
    assert interruption.parse_keys([], default) == default
    assert interruption.parse_keys(["+c"], default) == ("a", "b", "c")
    assert interruption.parse_keys(["c"], default) == ("c",)


@pytest.mark.parametrize(
    ("labels", "spot"),
    [
        ({constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE: "spot"}, True),
        ({constants.NODE_LABEL_EKS_CAPACITY_TYPE: "SPOT"}, True),
        ({constants.NODE_LABEL_GKE_PREEMPTIBLE: "true"}, True),
        ({constants.NODE_LABEL_AKS_PRIORITY: "spot"}, True),
        ({constants.NODE_LABEL_EKS_CAPACITY_TYPE: "ON_DEMAND"}, False),
    ],
)
def test_capacity_type_from_labels(labels: dict[str, str], spot: bool) -> None:
    assert interruption.is_spot(labels) is spot


def test_gpu_products_counts_gfd_labels() -> None:
    views = [
        NodeView("a", {constants.NODE_LABEL_GPU_PRODUCT: "NVIDIA-H100-80GB-HBM3"}),
        NodeView("b", {constants.NODE_LABEL_GPU_PRODUCT: "NVIDIA-H100-80GB-HBM3"}),
        NodeView("c", {}),
    ]
    assert interruption.gpu_products(views) == {"NVIDIA-H100-80GB-HBM3": 2}
