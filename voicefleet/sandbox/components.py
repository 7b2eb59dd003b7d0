"""The control plane's command lines and health checks, as pure data.

Flags follow what kubeadm gives a real control plane, minus what needs a kubelet or a
cloud: TLS on loopback, RBAC with the Node authorizer, NodeRestriction on top of the
default admission plugins, signed service-account tokens, and a controller manager that
runs every default controller under its own service account (so RBAC is exercised).
Each component listens on a port of its own picked at start, so sandboxes of parallel runs
do not collide.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

from voicefleet.sandbox.nodes import KWOK_NODE_SELECTOR
from voicefleet.sandbox.pki import FRONT_PROXY_CLIENT, Pki

LOOPBACK: Final = "127.0.0.1"
SERVICE_CIDR: Final = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
ETCD_NAME: Final = "sandbox"


class Health(Enum):
    """How a component's health endpoint is checked."""

    HTTP = "http"  # plain HTTP (etcd, kwok)
    ADMIN_TLS = "admin-tls"  # the API server, verified against our CA, as admin
    SELF_SIGNED = "self-signed"  # components serving a certificate they made themselves


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def free(cls) -> Ports:
        """Ports free right now on loopback; held open together so none repeats."""
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(6)]
        try:
            for sock in sockets:
                sock.bind((LOOPBACK, 0))
            ports = [sock.getsockname()[1] for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()
        return cls(*ports)


@dataclass(frozen=True)
class Layout:
    """Where everything lives inside the state directory."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig handed to users and tests."""
        return self.root / "kubeconfig"

    @property
    def controller_manager_kubeconfig(self) -> Path:
        return self.root / "controller-manager.kubeconfig"

    @property
    def scheduler_kubeconfig(self) -> Path:
        return self.root / "scheduler.kubeconfig"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


@dataclass(frozen=True)
class Component:
    """One process of the control plane and how to tell that it is up."""

    name: str
    argv: tuple[str, ...]
    health_url: str
    health: Health
    start_timeout: float


def api_server_url(ports: Ports) -> str:
    return f"https://{LOOPBACK}:{ports.apiserver}"


def control_plane(
    binaries: dict[str, Path],
    layout: Layout,
    ports: Ports,
    pki: Pki,
    kwok_cidr: str,
    *,
    advertise: str | None = None,
) -> list[Component]:
    """The components in start order; each needs the ones before it healthy.

    ``advertise``: with a real node, the address in its network namespace where a relay
    passes connections on to this API server; the ``kubernetes`` Service then points there,
    so pods reach the API server as in any cluster.
    """
    etcd_url = f"http://{LOOPBACK}:{ports.etcd_client}"
    peer_url = f"http://{LOOPBACK}:{ports.etcd_peer}"
    etcd = Component(
        name="etcd",
        argv=(
            str(binaries["etcd"]),
            f"--name={ETCD_NAME}",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={ETCD_NAME}={peer_url}",
            # A throw-away test store: skipping fsync makes it fast on shared disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ),
        health_url=f"{etcd_url}/health",
        health=Health.HTTP,
        start_timeout=30,
    )
    apiserver = Component(
        name="kube-apiserver",
        argv=(
            str(binaries["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={advertise or LOOPBACK}",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
            f"--proxy-client-key-file={pki.front_proxy_client.key}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # Without a real node the `kubernetes` Service would point at 127.0.0.1, which
            # Endpoints refuse (loopback), and nothing reaches the API through it.
            f"--endpoint-reconciler-type={'lease' if advertise else 'none'}",
            "--allow-privileged=true",
            "--profiling=false",
        ),
        health_url=f"{api_server_url(ports)}/readyz",
        health=Health.ADMIN_TLS,
        start_timeout=120,
    )
    controller_manager = Component(
        name="kube-controller-manager",
        argv=(
            str(binaries["kube-controller-manager"]),
            f"--kubeconfig={layout.controller_manager_kubeconfig}",
            f"--authentication-kubeconfig={layout.controller_manager_kubeconfig}",
            f"--authorization-kubeconfig={layout.controller_manager_kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports.controller_manager}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Nodes get their pod CIDRs from us (nodes.py), inside 127.0.0.0/8.
            "--allocate-node-cidrs=false",
            "--cluster-name=voicefleet-sandbox",
            "--profiling=false",
        ),
        health_url=f"https://{LOOPBACK}:{ports.controller_manager}/healthz",
        health=Health.SELF_SIGNED,
        start_timeout=60,
    )
    scheduler = Component(
        name="kube-scheduler",
        argv=(
            str(binaries["kube-scheduler"]),
            f"--kubeconfig={layout.scheduler_kubeconfig}",
            f"--authentication-kubeconfig={layout.scheduler_kubeconfig}",
            f"--authorization-kubeconfig={layout.scheduler_kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports.scheduler}",
            "--leader-elect=false",
            "--profiling=false",
        ),
        health_url=f"https://{LOOPBACK}:{ports.scheduler}/healthz",
        health=Health.SELF_SIGNED,
        start_timeout=60,
    )
    kwok = Component(
        name="kwok",
        argv=(
            str(binaries["kwok"]),
            # An explicit (empty) config: never pick up a developer's ~/.kwok/kwok.yaml.
            f"--config={layout.kwok_config}",
            f"--kubeconfig={layout.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
            f"--cidr={kwok_cidr}",
            f"--node-ip={LOOPBACK}",
            f"--server-address={LOOPBACK}:{ports.kwok}",
        ),
        health_url=f"http://{LOOPBACK}:{ports.kwok}/healthz",
        health=Health.HTTP,
        start_timeout=30,
    )
    return [etcd, apiserver, controller_manager, scheduler, kwok]


# Node leases, as kubelets keep them: kwok renews each node's Lease every 10 s (a quarter of
# its duration). Without leases kwok's default stage refreshes a node's Ready condition only
# every 20-45 s, and under load that outlasts the node lifecycle controller's 50 s grace:
# every node flaps NotReady, which the operator rightly treats as an interruption.
KWOK_CONFIG: Final = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  nodeLeaseDurationSeconds: 40
"""
