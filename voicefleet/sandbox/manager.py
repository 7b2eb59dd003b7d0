"""Bring the sandbox up, report on it, and take it down again.

``up`` in order, each step waiting for the one before to be healthy:
1. find (or build) the binaries, write certificates and kubeconfigs;
2. start etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok;
3. create the fake nodes, wait until kwok reports them Ready and the service-account
   controller has made ``default/default`` (before that, every pod create is refused).

The state file is rewritten after every start, so whatever happens to ``up`` itself,
``down`` finds every pid it left. A failure stops what was started, removes the state but
keeps the logs, and names the component and its log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from voicefleet.sandbox import (
    binaries,
    kubeconfig,
    netns,
    node,
    node_host,
    node_images,
    nodes,
    pki,
    processes,
)
from voicefleet.sandbox.api import ApiError, Client, Credentials, get_text, unverified_context
from voicefleet.sandbox.build import Progress
from voicefleet.sandbox.components import (
    KWOK_CONFIG,
    Component,
    Health,
    Layout,
    Ports,
    api_server_url,
    control_plane,
)
from voicefleet.sandbox.processes import Process
from voicefleet.sandbox.versions import KUBERNETES_VERSION

ENV_STATE_DIR: Final = "VOICEFLEET_SANDBOX_DIR"
POLL_SECONDS: Final = 0.2
NODES_READY_TIMEOUT: Final = 60.0
ADMIN_USER: Final = "admin"


class SandboxError(RuntimeError):
    """The sandbox could not be started; the message says which part and where its log is."""


def default_state_dir() -> Path:
    """``$VOICEFLEET_SANDBOX_DIR`` or ``$XDG_STATE_HOME/voicefleet/sandbox``."""
    override = os.environ.get(ENV_STATE_DIR)
    if override:
        return Path(override).expanduser()
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "voicefleet" / "sandbox"


@dataclass
class Sandbox:
    """A running sandbox, as recorded in ``<state>/state.json``."""

    state_dir: Path
    server: str
    kubeconfig: Path
    pod_network: str
    ports: dict[str, int]
    kubernetes_version: str = KUBERNETES_VERSION
    processes: list[Process] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    started_seconds: float = 0.0
    # The real node (node.py): its network namespace and containerd's image root.
    real_node_netns: str | None = None
    real_node_images: str | None = None

    @property
    def layout(self) -> Layout:
        return Layout(self.state_dir)

    def credentials(self) -> Credentials:
        directory = self.layout.pki
        return Credentials(
            self.server, directory / "ca.crt", directory / "admin.crt", directory / "admin.key"
        )

    def client(self) -> Client:
        return Client(self.credentials())

    def save(self) -> None:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["kubeconfig"] = str(self.kubeconfig)
        data["processes"] = [{**asdict(p), "log": str(p.log)} for p in self.processes]
        temporary = self.layout.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.replace(self.layout.state_file)

    @classmethod
    def load(cls, state_dir: Path) -> Sandbox | None:
        path = Layout(state_dir).state_file
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        data["state_dir"] = Path(data["state_dir"])
        data["kubeconfig"] = Path(data["kubeconfig"])
        data["processes"] = [Process(**{**p, "log": Path(p["log"])}) for p in data["processes"]]
        return cls(**data)

    def running(self) -> list[Process]:
        return [p for p in self.processes if processes.is_running(p)]

    def healthy(self) -> bool:
        """Every process runs and the API server says it is ready."""
        every = len(self.running()) == len(self.processes) > 0
        return every and self.client().healthy()

    def rss_kib(self) -> int:
        return sum(processes.rss_kib(p.pid) for p in self.running())


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per state directory."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    with state_dir.with_name(state_dir.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pod_network() -> str:
    """A /16 inside 127.0.0.0/8 for pod IPs, random so parallel sandboxes rarely share it.

    127.0.x.x is left alone: 127.0.0.1 and Debian's 127.0.1.1 hostname entry live there.
    """
    return f"127.{random.randint(64, 250)}.0.0/16"


def _health_ok(component: Component, client: Client) -> bool:
    if component.health is Health.ADMIN_TLS:
        return client.healthy(urllib.parse.urlparse(component.health_url).path)
    context = unverified_context() if component.health is Health.SELF_SIGNED else None
    status, _body = get_text(component.health_url, context)
    return status == 200


def _wait_healthy(component: Component, process: Process, client: Client) -> None:
    deadline = time.monotonic() + component.start_timeout
    while True:
        if not processes.is_running(process):
            raise SandboxError(
                f"{component.name} exited during start; its log is {process.log}:\n"
                + processes.log_tail(process.log)
            )
        if _health_ok(component, client):
            return
        if time.monotonic() > deadline:
            raise SandboxError(
                f"{component.name} was not healthy after {component.start_timeout:.0f} s "
                f"({component.health_url}); its log is {process.log}:\n"
                + processes.log_tail(process.log)
            )
        time.sleep(POLL_SECONDS)


def _create_nodes(client: Client, manifests: Sequence[dict[str, Any]]) -> None:
    for manifest in manifests:
        try:
            client.request("POST", "/api/v1/nodes", manifest)
        except ApiError as exc:
            if exc.status != 409:  # already there: `up` is idempotent
                raise


def _ready_nodes(client: Client, *, selector: bool = True) -> set[str]:
    query = f"?labelSelector={urllib.parse.quote(nodes.LABEL_SANDBOX_GROUP)}" if selector else ""
    listing = client.request("GET", f"/api/v1/nodes{query}")
    ready: set[str] = set()
    for item in listing.get("items", []):
        for condition in item.get("status", {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                ready.add(item["metadata"]["name"])
    return ready


def _wait_cluster_ready(sandbox: Sandbox, kwok_log: Path) -> None:
    """Until every fake node is Ready and pods can be admitted in ``default``."""
    client = sandbox.client()
    deadline = time.monotonic() + NODES_READY_TIMEOUT
    missing: set[str] = set(sandbox.nodes)
    has_account = False
    while time.monotonic() < deadline:
        missing = set(sandbox.nodes) - _ready_nodes(client)
        try:
            client.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            has_account = True
        except ApiError as exc:
            if exc.status != 404:
                raise
        if not missing and has_account:
            return
        time.sleep(POLL_SECONDS)
    if missing:
        raise SandboxError(
            f"kwok did not make nodes Ready within {NODES_READY_TIMEOUT:.0f} s "
            f"({', '.join(sorted(missing))}); its log is {kwok_log}"
        )
    raise SandboxError(
        "the controller manager made no default service account within "
        f"{NODES_READY_TIMEOUT:.0f} s; its log is {sandbox.layout.log('kube-controller-manager')}"
    )


def _stop_all(sandbox: Sandbox, log: Progress | None = None) -> None:
    """Stop every process, the kubelet and its containers first (else it restarts them)."""
    kubelet_first = sorted(
        reversed(sandbox.processes), key=lambda p: p.name not in node.NODE_AGENTS
    )
    for process in kubelet_first:
        if process.name == node.CONTAINERD and sandbox.real_node_images:
            node_host.stop_containers(_node_layout(sandbox))
        if log is not None and processes.is_running(process):
            log(f"stopping {process.name} (pid {process.pid})")
        processes.stop(process)


def _node_layout(sandbox: Sandbox) -> node.NodeLayout:
    return node.layout_for(sandbox.state_dir, Path(sandbox.real_node_images or "."))


def _clean_real_node(sandbox: Sandbox) -> None:
    """After every process stopped: mounts, pod and node namespaces, cgroups."""
    if sandbox.real_node_netns is None:
        return
    layout = _node_layout(sandbox)
    node_host.unmount_netns(layout)
    node_host.unmount_under(sandbox.state_dir)
    netns.delete(sandbox.real_node_netns)
    node_host.remove_cgroups(node.cgroup_parent(sandbox.state_dir))


def _start_real_node(
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

    def start(component: str, argv: list[str], *, inside: bool = True) -> Process:
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
    relay = start(
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
    containerd = start(
        node.CONTAINERD, [str(shutil.which("containerd")), f"--config={layout.containerd_config}"]
    )
    node_host.wait_for(
        lambda: layout.socket.exists() and _ctr_answers(layout),
        60,
        "containerd did not answer",
        containerd.log,
    )
    with node_images.temporary_dir() as work:
        node_images.pause_image(layout, Path(work), log)
    loaded = node_images.load_images(layout, image_dir or default_image_dir(), log)
    log(f"images on the real node: {', '.join(loaded) or 'none built yet'}")
    kubelet = start(
        node.KUBELET,
        node.kubelet_argv(found["kubelet"], layout, kubelet_kubeconfig, node.node_labels()),
    )
    client = sandbox.client()
    node_host.wait_for(
        lambda: node.NODE_NAME in _ready_nodes(client, selector=False),
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
    start(
        node.KUBE_PROXY,
        [str(found["kube-proxy"]), f"--config={layout.kube_proxy_config}", "--v=1"],
    )


def _ctr_answers(layout: node.NodeLayout) -> bool:
    try:
        node_images.ctr(layout, "version")
    except node.NodeError:
        return False
    return True


def default_image_dir() -> Path:
    from voicefleet.images import default_out  # noqa: PLC0415

    return default_out()


def _remove_state(state_dir: Path, *, keep_logs: bool) -> None:
    if not state_dir.is_dir():
        return
    for entry in state_dir.iterdir():
        if keep_logs and entry.name == Layout(state_dir).logs.name:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if not keep_logs:
        state_dir.rmdir()


def _prepare(
    state_dir: Path, found: dict[str, Path], *, real_node: bool = False
) -> tuple[Sandbox, list[Component], pki.Pki]:
    """Write certificates, kubeconfigs and configs; nothing is started yet."""
    layout = Layout(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(exist_ok=True)
    keys = pki.generate(layout.pki, nodes=(node.NODE_NAME,) if real_node else ())
    ports = Ports.free()
    server = api_server_url(ports)
    kubeconfig.write(
        layout.kubeconfig, server=server, ca=keys.ca.cert, user=ADMIN_USER, credentials=keys.admin
    )
    kubeconfig.write(
        layout.controller_manager_kubeconfig,
        server=server,
        ca=keys.ca.cert,
        user=pki.CONTROLLER_MANAGER_USER,
        credentials=keys.controller_manager,
    )
    kubeconfig.write(
        layout.scheduler_kubeconfig,
        server=server,
        ca=keys.ca.cert,
        user=pki.SCHEDULER_USER,
        credentials=keys.scheduler,
    )
    layout.kwok_config.write_text(KWOK_CONFIG)
    pod_network = _pod_network()
    # kwok's fallback range: the first /24, which nodes.plan_nodes leaves to it.
    kwok_cidr = pod_network.replace(".0.0/16", ".0.0/24")
    sandbox = Sandbox(
        state_dir=state_dir,
        server=server,
        kubeconfig=layout.kubeconfig,
        pod_network=pod_network,
        ports=asdict(ports),
    )
    advertise = node.NODE_IP if real_node else None
    return sandbox, control_plane(found, layout, ports, keys, kwok_cidr, advertise=advertise), keys


def up(
    state_dir: Path | None = None,
    groups: Sequence[nodes.NodeGroup] = nodes.DEFAULT_NODES,
    log: Progress = print,
    *,
    tie_to_caller: bool = False,
    real_node: bool = False,
    image_dir: Path | None = None,
) -> Sandbox:
    """Start the sandbox, or return the one already running in ``state_dir``.

    ``tie_to_caller``: the processes get SIGTERM when this Python process dies, so a test
    run that is killed leaves nothing behind (``sandbox up`` from a shell leaves it off).
    Linux ties them to the calling *thread*: call it from a thread that lives as long as
    the sandbox should (pytest's main thread does).

    ``real_node``: also start a kubelet that runs real containers (``node.py``), with the
    images built into ``image_dir`` (``scripts/build-images.sh``'s output by default).
    """
    state_dir = state_dir or default_state_dir()
    with _locked(state_dir):
        existing = Sandbox.load(state_dir)
        if existing is not None:
            if existing.healthy():
                log(
                    f"sandbox already running in {state_dir} ({len(existing.nodes)} nodes; "
                    "`voicefleet sandbox down` first to start it with other nodes)"
                )
                return existing
            log(f"sandbox in {state_dir} is not healthy; stopping what is left of it")
            _stop_all(existing)
        _remove_state(state_dir, keep_logs=False)
        wanted = [*binaries.CONTROL_PLANE, *(binaries.REAL_NODE if real_node else ())]
        if real_node and (missing := node_host.missing_tools()):
            raise SandboxError(
                f"the real node needs {', '.join(missing)} (Debian: apt-get install "
                "containerd runc containernetworking-plugins iptables iproute2 golang)"
            )
        found = binaries.resolve(wanted, log=log)
        started = time.monotonic()
        sandbox, components, keys = _prepare(state_dir, found, real_node=real_node)
        sandbox.save()
        try:
            client = sandbox.client()
            for component in components:
                log(f"starting {component.name}")
                process = processes.start(
                    component.name,
                    component.argv,
                    sandbox.layout.log(component.name),
                    tie_to_parent=tie_to_caller,
                )
                sandbox.processes.append(process)
                sandbox.save()
                _wait_healthy(component, process, client)
            if real_node:
                _start_real_node(
                    sandbox, found, keys, image_dir=image_dir, log=log, tie=tie_to_caller
                )
            manifests = nodes.manifests(groups, sandbox.pod_network)
            sandbox.nodes = [m["metadata"]["name"] for m in manifests]
            if real_node:
                sandbox.nodes.append(node.NODE_NAME)
            log(f"creating {len(manifests)} fake nodes")
            _create_nodes(client, manifests)
            _wait_cluster_ready(sandbox, sandbox.layout.log("kwok"))
        except BaseException as exc:
            # Why BaseException: Ctrl-C during a slow start must not leave orphans either.
            _stop_all(sandbox)
            _clean_real_node(sandbox)
            _remove_state(state_dir, keep_logs=True)
            if isinstance(exc, SandboxError):
                raise
            if isinstance(exc, Exception):
                raise SandboxError(
                    f"sandbox start failed: {exc}; logs are in {sandbox.layout.logs}"
                ) from exc
            raise
        sandbox.started_seconds = round(time.monotonic() - started, 2)
        sandbox.save()
        log(f"sandbox up in {sandbox.started_seconds:.1f} s ({len(sandbox.nodes)} nodes)")
        return sandbox


def down(state_dir: Path | None = None, log: Progress = print) -> bool:
    """Stop every process the sandbox started and remove its state; False if none was."""
    state_dir = state_dir or default_state_dir()
    with _locked(state_dir):
        sandbox = Sandbox.load(state_dir)
        if sandbox is None:
            _remove_state(state_dir, keep_logs=False)
            return False
        _stop_all(sandbox, log)
        _clean_real_node(sandbox)
        _remove_state(state_dir, keep_logs=False)
        return True


def load(state_dir: Path | None = None) -> Sandbox | None:
    return Sandbox.load(state_dir or default_state_dir())
