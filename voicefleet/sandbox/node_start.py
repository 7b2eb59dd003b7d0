"""The real node started in a sandbox, part by part in order (the relay, containerd, the
images, the kubelet, its fake GPUs, kube-proxy), and what it leaves cleaned up after its
processes stopped (``node.py`` says why each part)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from voicefleet.sandbox import kubeconfig, netns, node, node_host, node_images, pki, processes
from voicefleet.sandbox.build import Progress
from voicefleet.sandbox.processes import Process
from voicefleet.sandbox.readiness import ready_nodes
from voicefleet.sandbox.state import Sandbox, SandboxError


def node_layout(sandbox: Sandbox) -> node.NodeLayout:
    return node.layout_for(sandbox.state_dir, Path(sandbox.real_node_images or "."))


def clean(sandbox: Sandbox) -> None:
    """After every process stopped: mounts, pod and node namespaces, cgroups."""
    if sandbox.real_node_netns is None:
        return
    layout = node_layout(sandbox)
    node_host.unmount_netns(layout)
    node_host.unmount_under(sandbox.state_dir)
    netns.delete(sandbox.real_node_netns)
    node_host.remove_cgroups(node.cgroup_parent(sandbox.state_dir))


def start(
    sandbox: Sandbox,
    found: dict[str, Path],
    keys: pki.Pki,
    *,
    image_dir: Path | None,
    log: Progress,
    tie: bool,
) -> None:
    """The kubelet, containerd, the relay and kube-proxy (node.py says why each)."""
    images_root = node.default_images_root()
    name = node.netns_name(sandbox.state_dir)
    sandbox.real_node_netns, sandbox.real_node_images = name, str(images_root)
    sandbox.save()
    layout = node.layout_for(sandbox.state_dir, images_root)
    layout.state.mkdir(parents=True, exist_ok=True)
    kubelet_kubeconfig = kubeconfig.write(
        layout.state / "kubelet.kubeconfig",
        server=sandbox.server,
        ca=keys.ca.cert,
        user=pki.NODE_USER_PREFIX + node.NODE_NAME,
        credentials=keys.kubelets[node.NODE_NAME],
    )
    if keys.kube_proxy is None:
        raise SandboxError("no kube-proxy certificate was made for the real node")
    proxy_kubeconfig = kubeconfig.write(
        layout.state / "kube-proxy.kubeconfig",
        server=sandbox.server,
        ca=keys.ca.cert,
        user=pki.KUBE_PROXY_USER,
        credentials=keys.kube_proxy,
    )
    parent = node.cgroup_parent(sandbox.state_dir)
    node_host.write_configs(layout, keys.ca.cert, parent, proxy_kubeconfig)
    node_host.setup_network(name)
    node_host.make_cgroups(parent)

    def run(component: str, argv: list[str], *, inside: bool = True) -> Process:
        log(f"starting {component} (real node)")
        process = processes.start(
            component,
            argv,
            sandbox.layout.log(component),
            tie_to_parent=tie,
            netns_name=name if inside else None,
        )
        sandbox.processes.append(process)
        sandbox.save()
        return process

    api_port = sandbox.ports["apiserver"]
    relay = run(
        node.RELAY,
        [
            sys.executable,
            "-P",
            "-m",
            "voicefleet.sandbox.relay",
            f"--netns={name}",
            f"--listen=127.0.0.1:{api_port}",
            f"--listen={node.NODE_IP}:{api_port}",
            f"--to=127.0.0.1:{api_port}",
        ],
        # It enters the namespace itself to listen there, and connects from the host's.
        inside=False,
    )
    node_host.wait_for(
        lambda: "relaying" in relay.log.read_text(errors="replace"),
        30,
        "the API server relay did not start",
        relay.log,
    )
    containerd = run(
        node.CONTAINERD, [str(shutil.which("containerd")), f"--config={layout.containerd_config}"]
    )
    node_host.wait_for(
        lambda: node_images.answers(layout),
        60,
        "containerd did not answer",
        containerd.log,
    )
    with node_images.temporary_dir() as work:
        node_images.pause_image(layout, Path(work), log)
    loaded = node_images.load_images(layout, image_dir or default_image_dir(), log)
    log(f"images on the real node: {', '.join(loaded) or 'none built yet'}")
    kubelet = run(
        node.KUBELET,
        node.kubelet_argv(found["kubelet"], layout, kubelet_kubeconfig, node.node_labels()),
    )
    client = sandbox.client()
    node_host.wait_for(
        lambda: node.NODE_NAME in ready_nodes(client, selector=False),
        node.READY_TIMEOUT,
        "the real node's kubelet did not make its Node Ready",
        kubelet.log,
    )
    client.request(
        "PATCH",
        f"/api/v1/nodes/{node.NODE_NAME}/status",
        node.gpu_capacity_patch(node.FAKE_GPUS),
        content_type="application/strategic-merge-patch+json",
    )
    run(
        node.KUBE_PROXY,
        [str(found["kube-proxy"]), f"--config={layout.kube_proxy_config}", "--v=1"],
    )


def default_image_dir() -> Path:
    from voicefleet.image_store import default_out  # noqa: PLC0415

    return default_out()
