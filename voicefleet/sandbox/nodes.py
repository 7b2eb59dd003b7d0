"""Fake nodes shaped like a GPU cluster: what they are and their Node manifests.

kwok keeps every Node annotated ``kwok.x-k8s.io/node=fake`` alive (heartbeats, leases,
Ready) and runs the pods scheduled onto it. The labels are the ones real clusters carry:
GPU feature discovery's ``nvidia.com/gpu.*``, Karpenter's and EKS's capacity type, so the
operator's node affinity and interruption watcher see what they would see on EKS.

Each node gets its own ``spec.podCIDR`` inside 127.0.0.0/8: kwok hands out pod IPs from it,
and since Linux routes all of 127/8 to the loopback device, a test can bind a real process
to a pod's IP and the operator reaches it exactly as it would reach the pod.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from voicefleet.constants import (
    EKS_CAPACITY_ON_DEMAND,
    EKS_CAPACITY_SPOT,
    NODE_LABEL_EKS_CAPACITY_TYPE,
    NODE_LABEL_GPU_COUNT,
    NODE_LABEL_GPU_FAMILY,
    NODE_LABEL_GPU_MEMORY,
    NODE_LABEL_GPU_PRODUCT,
    NODE_LABEL_HOSTNAME,
    NODE_LABEL_INSTANCE_TYPE,
    NODE_LABEL_KARPENTER_CAPACITY_TYPE,
    RESOURCE_GPU,
    CapacityType,
)
from voicefleet.sandbox.versions import KUBERNETES_VERSION

KWOK_NODE_ANNOTATION: Final = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE: Final = "fake"
KWOK_NODE_SELECTOR: Final = f"{KWOK_NODE_ANNOTATION}={KWOK_NODE_VALUE}"
# Labels only the sandbox sets, so a test (or `sandbox status`) can tell its nodes apart.
LABEL_SANDBOX_GROUP: Final = "sandbox.voicefleet.dev/group"

DEFAULT_GPU_PRODUCT: Final = "NVIDIA-H100-80GB-HBM3"
# nvidia.com/gpu.memory (MiB) and nvidia.com/gpu.family as GPU feature discovery reports them.
GPU_MEMORY_MIB: Final[dict[str, int]] = {
    "NVIDIA-H100-80GB-HBM3": 81559,
    "NVIDIA-H200": 143771,
    "NVIDIA-A100-SXM4-80GB": 81920,
    "NVIDIA-L40S": 46068,
    "NVIDIA-L4": 23034,
    "NVIDIA-GeForce-RTX-4090": 24564,
}
GPU_FAMILY: Final[dict[str, str]] = {
    "NVIDIA-H100-80GB-HBM3": "hopper",
    "NVIDIA-H200": "hopper",
    "NVIDIA-A100-SXM4-80GB": "ampere",
    "NVIDIA-L40S": "ada-lovelace",
    "NVIDIA-L4": "ada-lovelace",
    "NVIDIA-GeForce-RTX-4090": "ada-lovelace",
}
EKS_CAPACITY: Final[dict[str, str]] = {
    CapacityType.SPOT: EKS_CAPACITY_SPOT,
    CapacityType.ON_DEMAND: EKS_CAPACITY_ON_DEMAND,
}
MAX_NODES: Final = 250  # one /24 of pod IPs per node inside a /16


@dataclass(frozen=True)
class NodeGroup:
    """``count`` identical nodes; ``gpus`` is per node, 0 for a CPU-only node."""

    count: int
    capacity_type: str = CapacityType.ON_DEMAND
    gpus: int = 8
    product: str = DEFAULT_GPU_PRODUCT
    memory_mib: int | None = None
    cpu: int = 192
    memory_gib: int = 2048

    @property
    def prefix(self) -> str:
        """Node-name prefix, e.g. ``h100-spot`` or ``cpu-on-demand``."""
        if self.gpus == 0:
            return f"cpu-{self.capacity_type}"
        # NVIDIA-H100-80GB-HBM3 -> h100, NVIDIA-GeForce-RTX-4090 -> rtx-4090
        short = self.product.lower().removeprefix("nvidia-").removeprefix("geforce-")
        short = short.split("-")[0] if not short.startswith("rtx") else short[:8]
        return f"{short}-{self.capacity_type}"

    @property
    def gpu_memory_mib(self) -> int | None:
        return self.memory_mib if self.memory_mib is not None else GPU_MEMORY_MIB.get(self.product)


DEFAULT_NODES: Final = (
    NodeGroup(count=2, capacity_type=CapacityType.ON_DEMAND),
    NodeGroup(count=4, capacity_type=CapacityType.SPOT),
    NodeGroup(count=1, capacity_type=CapacityType.ON_DEMAND, gpus=0, cpu=16, memory_gib=64),
)
NODES_HELP: Final = (
    "a group of fake nodes, as comma-separated key=value: count (required), "
    f"capacity ({CapacityType.ON_DEMAND}|{CapacityType.SPOT}, default {CapacityType.ON_DEMAND}), "
    "gpus per node (default 8; 0 for a CPU node), "
    f"product (default {DEFAULT_GPU_PRODUCT}), memory (GPU MiB, for products not known), "
    "cpu, memory-gib. Repeat for several groups; replaces the default "
    "2 on-demand + 4 spot H100 nodes + 1 CPU node. "
    "Example: --nodes count=3,capacity=spot,gpus=4,product=NVIDIA-L40S"
)


def parse_group(text: str) -> NodeGroup:
    """Parse ``count=4,capacity=spot,gpus=8,product=...`` (see ``NODES_HELP``)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not value:
            raise ValueError(f"expected key=value in {text!r}, got {part!r}")
        fields[key.strip()] = value.strip()
    if "count" not in fields:
        raise ValueError(f"node group {text!r} needs count=N")
    group = NodeGroup(count=int(fields.pop("count")))
    for key, value in fields.items():
        if key == "capacity":
            if value not in EKS_CAPACITY:
                raise ValueError(f"capacity must be one of {sorted(EKS_CAPACITY)}, got {value!r}")
            group = replace(group, capacity_type=value)
        elif key == "product":
            group = replace(group, product=value)
        elif key == "gpus":
            group = replace(group, gpus=int(value))
        elif key == "memory":
            group = replace(group, memory_mib=int(value))
        elif key == "cpu":
            group = replace(group, cpu=int(value))
        elif key == "memory-gib":
            group = replace(group, memory_gib=int(value))
        else:
            raise ValueError(f"unknown key {key!r} in node group {text!r}")
    if group.count < 1 or group.gpus < 0:
        raise ValueError(f"node group {text!r} needs count >= 1 and gpus >= 0")
    return group


@dataclass(frozen=True)
class FakeNode:
    """One node to create: its name, group and pod CIDR."""

    name: str
    group: NodeGroup
    pod_cidr: str


def plan_nodes(groups: Sequence[NodeGroup], pod_network: str) -> list[FakeNode]:
    """Name every node and give each one /24 of ``pod_network`` (a /16 in 127.0.0.0/8)."""
    network = ipaddress.ip_network(pod_network)
    subnets = network.subnets(new_prefix=24)
    # The first /24 stays kwok's fallback range (--cidr), for pods of nodes without one.
    next(subnets)
    counters: dict[str, int] = {}
    nodes: list[FakeNode] = []
    for group in groups:
        for _ in range(group.count):
            index = counters.get(group.prefix, 0)
            counters[group.prefix] = index + 1
            if len(nodes) >= MAX_NODES:
                raise ValueError(f"at most {MAX_NODES} fake nodes")
            nodes.append(FakeNode(f"{group.prefix}-{index}", group, str(next(subnets))))
    return nodes


def node_manifest(node: FakeNode) -> dict[str, Any]:
    """The v1 Node kwok will keep Ready; status is accepted on create, as from a kubelet."""
    group = node.group
    labels = {
        NODE_LABEL_HOSTNAME: node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        NODE_LABEL_INSTANCE_TYPE: f"kwok-{group.gpus}x-{group.prefix.split('-')[0]}",
        NODE_LABEL_KARPENTER_CAPACITY_TYPE: group.capacity_type,
        NODE_LABEL_EKS_CAPACITY_TYPE: EKS_CAPACITY[group.capacity_type],
        LABEL_SANDBOX_GROUP: group.prefix,
    }
    capacity = {
        "cpu": str(group.cpu),
        "memory": f"{group.memory_gib}Gi",
        "pods": "110",
        "ephemeral-storage": "1Ti",
    }
    if group.gpus > 0:
        labels[NODE_LABEL_GPU_PRODUCT] = group.product
        labels[NODE_LABEL_GPU_COUNT] = str(group.gpus)
        memory = group.gpu_memory_mib
        if memory is not None:
            labels[NODE_LABEL_GPU_MEMORY] = str(memory)
        family = GPU_FAMILY.get(group.product)
        if family is not None:
            labels[NODE_LABEL_GPU_FAMILY] = family
        capacity[RESOURCE_GPU] = str(group.gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            # ttl 0: the apiserver's node TTL controller never tries to reach a kubelet.
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            # kwok keeps what we set here; `kubectl get nodes` then shows the cluster's version.
            "nodeInfo": {"kubeletVersion": KUBERNETES_VERSION, "architecture": "amd64"},
        },
    }


def manifests(groups: Iterable[NodeGroup], pod_network: str) -> list[dict[str, Any]]:
    return [node_manifest(node) for node in plan_nodes(list(groups), pod_network)]
