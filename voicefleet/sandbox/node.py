"""The real node: a kubelet that runs real containers, beside kwok's fake nodes (opt-in).

What runs, all inside one network namespace the sandbox makes (``netns``), so the host's
network is never changed:

1. a relay (``relay``) that listens there on 127.0.0.1 and on the node's address and passes
   connections to the API server on the host's loopback: the kubelet and kube-proxy reach
   the API server as they would on a real node, and pods reach it through the ``kubernetes``
   Service, whose endpoint is the node's address (the API server advertises it);
2. containerd with runc and a bridge CNI (Debian's packages): pods get addresses in
   ``POD_CIDR`` on a bridge in the namespace; its image store lives in the image cache, so
   a multi-GB image is unpacked once, not once per sandbox;
3. the images: a pause image the sandbox builds (a static Go binary; no registry is
   reachable), then every OCI layout in the image directory (``scripts/build-images.sh``),
   each imported only when its digest changed;
4. the kubelet, built from Go modules like the control plane, on cgroup v1 with cgroupfs
   (``failCgroupV1: false``), its pods under a cgroup of this sandbox's own;
5. kube-proxy (iptables, in the namespace), so Services work from pods and from a test
   thread that enters the namespace (``netns.inside``);
6. once the Node registered: fake ``nvidia.com/gpu`` capacity in its status (as the NVIDIA
   device plugin would report it) beside the GPU-product and capacity-type labels.

This module is where the node keeps its files, what it is called, and the pure renderers
of its configs; ``node_host`` does the host's part (cgroups, network, cleanup),
``node_images`` fills containerd, and ``manager`` starts and stops it all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from voicefleet.constants import (
    EKS_CAPACITY_SPOT,
    NODE_LABEL_EKS_CAPACITY_TYPE,
    NODE_LABEL_GPU_COUNT,
    NODE_LABEL_GPU_PRODUCT,
    NODE_LABEL_KARPENTER_CAPACITY_TYPE,
    RESOURCE_GPU,
    CapacityType,
)
from voicefleet.sandbox.nodes import DEFAULT_GPU_PRODUCT, LABEL_SANDBOX_GROUP

NODE_NAME: Final = "real-0"
# RFC 2544's benchmarking range: routed nowhere, so nothing here can reach or shadow a
# real network. Pods on the bridge; the node's own address apart from it.
POD_CIDR: Final = "198.18.0.0/24"
NODE_IP: Final = "198.19.0.1"
BRIDGE: Final = "vf-cni0"
PAUSE_IMAGE: Final = "registry.k8s.io/pause:3.10"
READY_TIMEOUT: Final = 180.0
# What a kubelet on this kind of machine needs (the findings): cgroup v1 with
# cgroupfs, swap tolerated; and eviction thresholds low enough that a shared build
# machine's disk never evicts the test's pods.
EVICTION_HARD: Final = {
    "memory.available": "100Mi",
    "nodefs.available": "1%",
    "nodefs.inodesFree": "1%",
    "imagefs.available": "1%",
}

Log = Callable[[str], None]


class NodeError(RuntimeError):
    """The real node could not be started; the message names the part and its log."""


@dataclass(frozen=True)
class NodeLayout:
    """Where the real node keeps its files: per sandbox, and the shared image store."""

    state: Path  # <sandbox state>/node
    images: Path  # containerd's root: the unpacked images, kept between sandboxes

    @property
    def containerd_config(self) -> Path:
        return self.state / "containerd.toml"

    @property
    def containerd_state(self) -> Path:
        return self.state / "containerd-state"

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def cni_conf(self) -> Path:
        return self.state / "cni"

    @property
    def kubelet_root(self) -> Path:
        return self.state / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.state / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.state / "kube-proxy.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.state / "pod-logs"


def netns_name(state_dir: Path) -> str:
    """One namespace per sandbox, named after its state directory (stable across processes:
    ``down`` finds what ``up`` made)."""
    return "vf-" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]


def cgroup_parent(state_dir: Path) -> str:
    return f"/voicefleet-{netns_name(state_dir)}"


def node_labels(product: str = DEFAULT_GPU_PRODUCT) -> dict[str, str]:
    """A spot GPU node, as GPU feature discovery and Karpenter/EKS label one."""
    return {
        NODE_LABEL_GPU_PRODUCT: product,
        NODE_LABEL_GPU_COUNT: "1",
        NODE_LABEL_KARPENTER_CAPACITY_TYPE: CapacityType.SPOT,
        NODE_LABEL_EKS_CAPACITY_TYPE: EKS_CAPACITY_SPOT,
        LABEL_SANDBOX_GROUP: "real",
    }


def containerd_config(layout: NodeLayout, cni_bin: Path) -> str:
    """containerd 1.6 (config version 2): runc with cgroupfs, the bridge CNI, our pause.

    ``restrict_oom_score_adj``: containerd runs with an oom_score_adj it may not lower for
    its containers here. Pod network namespaces are kept under the state directory, so
    ``stop`` finds and removes every one.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{layout.images}"
state = "{layout.containerd_state}"

[grpc]
  address = "{layout.socket}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "runc"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{layout.cni_conf}"
  max_conf_num = 1
"""


def cni_config(layout: NodeLayout) -> dict[str, Any]:
    """A bridge with the pods' gateway, host-local addresses, hairpin for Services."""
    return {
        "cniVersion": "1.0.0",
        "name": "voicefleet-sandbox",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.state / "cni-ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: NodeLayout, ca: Path, cgroup_root: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This kind of machine: hybrid cgroups (v1 controllers), no systemd, swap allowed.
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": f"unix://{layout.socket}",
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(layout.pod_logs),
        "resolvConf": "/etc/resolv.conf",
        "evictionHard": EVICTION_HARD,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "maxPods": 110,
        "enforceNodeAllocatable": ["pods"],
        "enableServer": True,
        "protectKernelDefaults": False,
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        # The namespace cannot change conntrack's global table size; leave it alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def kubelet_argv(
    binary: Path, layout: NodeLayout, kubeconfig: Path, labels: dict[str, str]
) -> list[str]:
    return [
        str(binary),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.kubelet_root / 'pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={NODE_IP}",
        "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "--v=1",
    ]


def layout_for(state_dir: Path, images_root: Path) -> NodeLayout:
    return NodeLayout(state=state_dir / "node", images=images_root)


def default_images_root() -> Path:
    """containerd's root beside build-images' store (same cache, one copy of each image)."""
    from voicefleet.image_store import default_store  # noqa: PLC0415

    return default_store().parent / "containerd"


def gpu_capacity_patch(gpus: int) -> dict[str, Any]:
    """The Node status the NVIDIA device plugin would report, for the scheduler."""
    return {"status": {"capacity": {RESOURCE_GPU: str(gpus)}}}


# Process names in the sandbox's state (and log file names).
RELAY: Final = "apiserver-relay"
CONTAINERD: Final = "containerd"
KUBELET: Final = "kubelet"
KUBE_PROXY: Final = "kube-proxy"
NODE_AGENTS: Final = (KUBELET, KUBE_PROXY)
FAKE_GPUS: Final = 4
