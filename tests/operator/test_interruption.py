"""Node interruption signals: every source in REFERENCE.md's table, and nodes that stay."""

from __future__ import annotations

from typing import Any

import pytest

from voicefleet import constants
from voicefleet.operator import interruption
from voicefleet.operator.interruption import NodeView, SignalConfig, signals


def node(**spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {})
    ready = spec.pop("ready", "True")
    return {
        "metadata": {"name": "n1", "labels": labels},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
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
