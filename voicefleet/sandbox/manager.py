"""Bring the sandbox up, or the one already running, and take it down again.

``up`` in order, each step waiting for the one before to be healthy:
1. find (or build) the binaries, write certificates and kubeconfigs;
2. start etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok;
3. create the fake nodes, wait until kwok reports them Ready and the service-account
   controller has made ``default/default`` (before that, every pod create is refused).

The state file is rewritten after every start, so whatever happens to ``up`` itself,
``down`` finds every pid it left. A failure stops what was started, removes the state but
keeps the logs, and names the component and its log. The record itself is ``state``, the
waits ``readiness``, the real node's start and cleanup ``node_start``.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Final

from voicefleet.sandbox import (
    binaries,
    kubeconfig,
    node,
    node_host,
    node_start,
    nodes,
    pki,
    processes,
    readiness,
)
from voicefleet.sandbox.build import Progress
from voicefleet.sandbox.components import (
    KWOK_CONFIG,
    Component,
    Layout,
    Ports,
    api_server_url,
    control_plane,
)
from voicefleet.sandbox.state import Sandbox, SandboxError, default_state_dir

ADMIN_USER: Final = "admin"


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


def _stop_all(sandbox: Sandbox, log: Progress | None = None) -> None:
    """Stop every process, the kubelet and its containers first (else it restarts them)."""
    kubelet_first = sorted(
        reversed(sandbox.processes), key=lambda p: p.name not in node.NODE_AGENTS
    )
    for process in kubelet_first:
        if process.name == node.CONTAINERD and sandbox.real_node_images:
            node_host.stop_containers(node_start.node_layout(sandbox))
        if log is not None and processes.is_running(process):
            log(f"stopping {process.name} (pid {process.pid})")
        processes.stop(process)


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
                readiness.wait_healthy(component, process, client)
            if real_node:
                node_start.start(
                    sandbox, found, keys, image_dir=image_dir, log=log, tie=tie_to_caller
                )
            manifests = nodes.manifests(groups, sandbox.pod_network)
            sandbox.nodes = [m["metadata"]["name"] for m in manifests]
            if real_node:
                sandbox.nodes.append(node.NODE_NAME)
            log(f"creating {len(manifests)} fake nodes")
            readiness.create_nodes(client, manifests)
            readiness.wait_cluster_ready(sandbox, sandbox.layout.log("kwok"))
        except BaseException as exc:
            # Why BaseException: Ctrl-C during a slow start must not leave orphans either.
            _stop_all(sandbox)
            node_start.clean(sandbox)
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
        node_start.clean(sandbox)
        _remove_state(state_dir, keep_logs=False)
        return True


def load(state_dir: Path | None = None) -> Sandbox | None:
    return Sandbox.load(state_dir or default_state_dir())
