"""The real node's host side: the tools it needs, its configs written, its cgroups and
network namespace made, and nothing left running or mounted when it stops."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from voicefleet.sandbox import netns
from voicefleet.sandbox.components import SERVICE_CIDR
from voicefleet.sandbox.node import (
    NODE_IP,
    NodeError,
    NodeLayout,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
)
from voicefleet.sandbox.node_images import ctr

CNI_BIN_DIRS: Final = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))

POLL_SECONDS: Final = 0.5

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")


def missing_tools() -> list[str]:
    """Host programs the real node needs (Debian: containerd runc containernetworking-plugins
    iptables iproute2)."""
    wanted = ["containerd", "ctr", "runc", "ip", "iptables-restore", "go"]
    found = [tool for tool in wanted if shutil.which(tool) is None]
    if cni_bin_dir() is None:
        found.append("bridge CNI plugin (containernetworking-plugins)")
    return found


def cni_bin_dir() -> Path | None:
    for directory in CNI_BIN_DIRS:
        if (directory / "bridge").is_file() and (directory / "host-local").is_file():
            return directory
    return None


def make_cgroups(parent: str) -> None:
    """The kubelet's cgroup root in every v1 hierarchy (it refuses one that is missing)."""
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        if not hierarchy.is_dir() or hierarchy.name == "unified":
            continue
        target = hierarchy / parent.lstrip("/")
        target.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            for key in ("cpuset.cpus", "cpuset.mems"):
                (target / key).write_text((hierarchy / key).read_text())


def remove_cgroups(parent: str) -> None:
    """Remove the cgroup tree bottom-up (each directory is empty once its tasks are gone)."""
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        top = hierarchy / parent.lstrip("/")
        if not top.is_dir():
            continue
        for directory in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def setup_network(name: str) -> None:
    """The namespace, the node's address, forwarding and the bridge's
    netfilter hook (kube-proxy's Service rules must see pod-to-pod traffic on the bridge)."""
    netns.create(name)
    # On the namespace's loopback device: local to the node, reachable from pods through
    # the bridge's gateway (this kernel has no dummy interfaces).
    if f"{NODE_IP}/32" not in netns.ip(name, "-o", "addr", "show", "dev", "lo"):
        netns.ip(name, "addr", "add", f"{NODE_IP}/32", "dev", "lo")
    # A route for Service addresses, so a connection from the node itself (a test thread)
    # is made at all: kube-proxy's rules then rewrite it to a pod. Real nodes have a
    # default route for this; this namespace has none, so nothing can leave it.
    if SERVICE_CIDR not in netns.ip(name, "route", "show"):
        netns.ip(name, "route", "add", SERVICE_CIDR, "dev", "lo")
    with netns.inside(name):
        for key, value in (
            ("net/ipv4/ip_forward", "1"),
            ("net/bridge/bridge-nf-call-iptables", "1"),
            ("net/ipv4/conf/all/route_localnet", "1"),
        ):
            with contextlib.suppress(OSError):
                Path("/proc/sys", key).write_text(value)


def stop_containers(layout: NodeLayout) -> None:
    """Kill and delete every container and task, so no shim outlives the sandbox."""
    if not layout.socket.exists():
        return
    with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
        tasks = [line.split()[0] for line in ctr(layout, "tasks", "list").splitlines()[1:] if line]
        for task in tasks:
            with contextlib.suppress(NodeError):
                ctr(layout, "tasks", "kill", "--signal=SIGKILL", task)
        deadline = time.monotonic() + 10
        for task in tasks:
            while time.monotonic() < deadline:
                try:
                    ctr(layout, "tasks", "delete", "--force", task)
                    break
                except NodeError:
                    time.sleep(POLL_SECONDS)
        containers = [
            line.split()[0] for line in ctr(layout, "containers", "list").splitlines()[1:] if line
        ]
        for container in containers:
            with contextlib.suppress(NodeError):
                ctr(layout, "containers", "delete", container)


def unmount_netns(layout: NodeLayout) -> None:
    """Pod network namespaces containerd pinned under its state directory."""
    directory = layout.containerd_state / "io.containerd.grpc.v1.cri" / "netns"
    if not directory.is_dir():
        return
    for pinned in directory.iterdir():
        subprocess.run(["umount", str(pinned)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            pinned.unlink()


def write_configs(layout: NodeLayout, ca: Path, cgroup_root: str, proxy_kubeconfig: Path) -> None:
    cni_bin = cni_bin_dir()
    if cni_bin is None:
        raise NodeError(
            "the bridge CNI plugin is missing: apt-get install containernetworking-plugins"
        )
    for directory in (layout.state, layout.cni_conf, layout.kubelet_root, layout.pod_logs):
        directory.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_config(layout, cni_bin))
    (layout.cni_conf / "10-voicefleet.conflist").write_text(
        json.dumps(cni_config(layout), indent=2)
    )
    layout.kubelet_config.write_text(json.dumps(kubelet_config(layout, ca, cgroup_root), indent=2))
    layout.kube_proxy_config.write_text(json.dumps(kube_proxy_config(proxy_kubeconfig), indent=2))


def wait_for(check: Callable[[], bool], timeout: float, what: str, log_path: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(POLL_SECONDS)
    where = f"; its log is {log_path}" if log_path else ""
    raise NodeError(f"{what} within {timeout:.0f} s{where}")


def unmount_under(directory: Path) -> None:
    """Unmount whatever the kubelet and containerd left mounted below ``directory``
    (volumes, container root filesystems), deepest first, so it can be removed."""
    prefix = str(directory.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
