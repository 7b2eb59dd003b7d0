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

Config renderers are pure functions; ``start``/``stop`` do the work.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from voicefleet.constants import (
    EKS_CAPACITY_SPOT,
    NODE_LABEL_EKS_CAPACITY_TYPE,
    NODE_LABEL_GPU_COUNT,
    NODE_LABEL_GPU_PRODUCT,
    NODE_LABEL_KARPENTER_CAPACITY_TYPE,
    RESOURCE_GPU,
    CapacityType,
)
from voicefleet.sandbox import netns
from voicefleet.sandbox.components import SERVICE_CIDR
from voicefleet.sandbox.nodes import DEFAULT_GPU_PRODUCT, LABEL_SANDBOX_GROUP

NODE_NAME: Final = "real-0"
# RFC 2544's benchmarking range: routed nowhere, so nothing here can reach or shadow a
# real network. Pods on the bridge; the node's own address apart from it.
POD_CIDR: Final = "198.18.0.0/24"
NODE_IP: Final = "198.19.0.1"
BRIDGE: Final = "vf-cni0"
PAUSE_IMAGE: Final = "registry.k8s.io/pause:3.10"
K8S_NAMESPACE: Final = "k8s.io"  # containerd's namespace of the CRI plugin
CNI_BIN_DIRS: Final = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
IMAGE_REF_ANNOTATION: Final = "org.opencontainers.image.ref.name"
READY_TIMEOUT: Final = 180.0
POLL_SECONDS: Final = 0.5
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
# The pause process of every pod: sleeps until signalled. Built here because the real one
# comes from a registry; Go is already needed for the control plane.
PAUSE_SOURCE: Final = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}
"""
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


# --- doing it --------------------------------------------------------------------------------


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


def ctr(layout: NodeLayout, *args: str, stdin: IO[bytes] | None = None) -> str:
    argv = ["ctr", f"--address={layout.socket}", f"--namespace={K8S_NAMESPACE}", *args]
    done = subprocess.run(argv, stdin=stdin, capture_output=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise NodeError(f"ctr {' '.join(args[:3])} failed: {done.stderr.decode().strip()}")
    return done.stdout.decode()


def image_digests(layout: NodeLayout) -> dict[str, str]:
    """name -> manifest digest of every image containerd holds."""
    listed: dict[str, str] = {}
    for line in ctr(layout, "images", "list").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            listed[fields[0]] = fields[2]
    return listed


def layout_images(directory: Path) -> list[tuple[Path, str, str]]:
    """(layout, tag, digest) of each OCI layout under ``directory`` (build-images' output)."""
    found = []
    for index in sorted(directory.glob("*/index.json")):
        for descriptor in json.loads(index.read_text()).get("manifests", []):
            tag = descriptor.get("annotations", {}).get(IMAGE_REF_ANNOTATION)
            if tag:
                found.append((index.parent, tag, str(descriptor["digest"])))
    return found


def import_layout(layout: NodeLayout, oci: Path, name: str, log: Log) -> None:
    """Stream the layout into containerd as an OCI archive (blobs it has are skipped)."""
    started = time.monotonic()
    reader, writer = os.pipe()
    with os.fdopen(reader, "rb") as source:
        importer = subprocess.Popen(
            [
                "ctr",
                f"--address={layout.socket}",
                f"--namespace={K8S_NAMESPACE}",
                "images",
                "import",
                f"--base-name={name}",
                "--no-unpack=false",
                "-",
            ],
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        with os.fdopen(writer, "wb") as sink, tarfile.open(fileobj=sink, mode="w|") as tar:
            for path in sorted(oci.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(oci)), recursive=False)
        out, _ = importer.communicate(timeout=1800)
    if importer.returncode != 0:
        raise NodeError(f"importing {oci} into containerd failed: {out.decode().strip()}")
    log(f"imported {name} in {time.monotonic() - started:.0f} s")


def load_images(layout: NodeLayout, image_dir: Path, log: Log) -> list[str]:
    """Import every built image whose digest containerd does not have under its name."""
    held = image_digests(layout)
    found = [
        (oci, f"{_repository_of(oci)}:{tag}", digest)
        for oci, tag, digest in layout_images(image_dir)
    ]
    for oci, ref, digest in found:
        if held.get(ref) != digest:
            import_layout(layout, oci, _repository_of(oci), log)
    # Only once every image is in: a prune between two imports would forget an image that
    # is current but not yet looked at (the runtime, after a new operator build).
    names = [ref for _oci, ref, _digest in found]
    prune_images(layout, keep=set(names))
    return names


def prune_images(layout: NodeLayout, keep: set[str]) -> None:
    """Forget older imports of the project's images (containerd's garbage collector then
    frees their layers and snapshots): one copy of each image, not one per build."""
    from voicefleet.images import REPOSITORY  # noqa: PLC0415

    stale = [
        name
        for name in image_digests(layout)
        if name.startswith(f"{REPOSITORY}/") and name not in keep
    ]
    if stale:
        ctr(layout, "images", "remove", *stale)


def _repository_of(oci: Path) -> str:
    from voicefleet.images import REPOSITORY  # noqa: PLC0415  (stdlib-only module)

    return f"{REPOSITORY}/{oci.name}"


def pause_image(layout: NodeLayout, work: Path, log: Log) -> None:
    """Build and import ``PAUSE_IMAGE`` unless containerd has it."""
    if PAUSE_IMAGE in image_digests(layout):
        return
    source = work / "pause.go"
    source.write_text(PAUSE_SOURCE)
    binary = work / "pause"
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GO111MODULE": "off"}
    done = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), str(source)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise NodeError(f"building the pause binary failed: {done.stderr.strip()}")
    archive = work / "pause.oci.tar"
    write_single_binary_image(binary, "/pause", archive, tag=PAUSE_IMAGE.rsplit(":", 1)[1])
    with archive.open("rb") as stream:
        ctr(
            layout,
            "images",
            "import",
            f"--base-name={PAUSE_IMAGE.rsplit(':', 1)[0]}",
            "-",
            stdin=stream,
        )
    log(f"built and imported {PAUSE_IMAGE}")


def write_single_binary_image(binary: Path, target: str, archive: Path, *, tag: str) -> None:
    """An OCI archive of one static binary as the entrypoint (user 65535)."""
    import gzip  # noqa: PLC0415
    import io  # noqa: PLC0415

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as layer_tar:
        info = layer_tar.gettarinfo(str(binary), arcname=target.lstrip("/"))
        info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o755
        with binary.open("rb") as stream:
            layer_tar.addfile(info, stream)
    diff_id, _ = blob(raw.getvalue())
    layer_digest, layer = blob(gzip.compress(raw.getvalue(), mtime=0))
    config_digest, config = blob(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": [target], "User": "65535:65535"},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            sort_keys=True,
        ).encode()
    )
    manifest_digest, manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            },
            sort_keys=True,
        ).encode()
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {IMAGE_REF_ANNOTATION: tag},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    entries = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
        **{
            f"blobs/sha256/{digest.split(':')[1]}": data
            for digest, data in (
                (layer_digest, layer),
                (config_digest, config),
                (manifest_digest, manifest),
            )
        },
    }
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@contextlib.contextmanager
def image_store_lock(images: Path) -> Iterator[IO[str]]:
    """One real node per image store at a time: containerd's database allows one daemon."""
    images.mkdir(parents=True, exist_ok=True)
    handle = (images.parent / f".{images.name}.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise NodeError(
            f"another sandbox's real node uses {images}; stop it first (`voicefleet sandbox down`)"
        ) from exc
    yield handle


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


def temporary_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="voicefleet-node-")


def images_in(directories: Sequence[Path]) -> list[Path]:
    return [d for d in directories if d.is_dir()]


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


def layout_for(state_dir: Path, images_root: Path) -> NodeLayout:
    return NodeLayout(state=state_dir / "node", images=images_root)


def default_images_root() -> Path:
    """containerd's root beside build-images' store (same cache, one copy of each image)."""
    from voicefleet.images import default_store  # noqa: PLC0415

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
