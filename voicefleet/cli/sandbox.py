"""``voicefleet sandbox up | down | status | kubeconfig | build``: the local test cluster.

Progress goes to stderr and ``up`` prints ``export KUBECONFIG=...`` alone on stdout, so
``eval "$(voicefleet sandbox up)"`` points the shell at the sandbox.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from voicefleet.constants import (
    NODE_LABEL_GPU_PRODUCT,
    NODE_LABEL_KARPENTER_CAPACITY_TYPE,
    RESOURCE_GPU,
)
from voicefleet.sandbox.nodes import NODES_HELP


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _state_dir(args: argparse.Namespace) -> Path | None:
    value: Path | None = args.state_dir
    return value


def _up(args: argparse.Namespace) -> int:
    from voicefleet.sandbox import manager, nodes, state  # noqa: PLC0415 (cryptography loads late)
    from voicefleet.sandbox.build import BuildError  # noqa: PLC0415

    try:
        groups = [nodes.parse_group(text) for text in args.nodes] or list(nodes.DEFAULT_NODES)
    except ValueError as exc:
        _log(f"error: --nodes: {exc}")
        return 2
    try:
        sandbox = manager.up(_state_dir(args), groups, log=_log, real_node=args.real_node)
    except (state.SandboxError, BuildError) as exc:
        _log(f"error: {exc}")
        return 1
    print(f"export KUBECONFIG={sandbox.kubeconfig}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from voicefleet.sandbox import manager  # noqa: PLC0415

    if not manager.down(_state_dir(args), log=_log):
        _log("no sandbox was running")
    return 0


def _describe_node(item: dict[str, Any]) -> str:
    labels = item["metadata"].get("labels", {})
    conditions = item.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    gpus = item.get("status", {}).get("capacity", {}).get(RESOURCE_GPU, "0")
    product = labels.get(NODE_LABEL_GPU_PRODUCT, "-")
    capacity = labels.get(NODE_LABEL_KARPENTER_CAPACITY_TYPE, "-")
    return (
        f"  {item['metadata']['name']:<22} {'Ready' if ready else 'NotReady':<9} "
        f"{capacity:<10} {gpus:>3} x {product}"
    )


def _status(args: argparse.Namespace) -> int:
    from voicefleet.sandbox import manager, processes  # noqa: PLC0415
    from voicefleet.sandbox.api import ApiError  # noqa: PLC0415

    sandbox = manager.load(_state_dir(args))
    if sandbox is None:
        print("sandbox: not running")
        return 1
    print(f"sandbox: {sandbox.state_dir} (Kubernetes {sandbox.kubernetes_version})")
    print(f"  api server {sandbox.server}, pod IPs from {sandbox.pod_network}")
    for process in sandbox.processes:
        alive = processes.is_running(process)
        rss = processes.rss_kib(process.pid) / 1024 if alive else 0.0
        state = f"running, {rss:.0f} MiB" if alive else "NOT RUNNING"
        print(f"  {process.name:<24} pid {process.pid:<8} {state:<20} log {process.log}")
    print(f"  resident memory, all processes: {sandbox.rss_kib() / 1024:.0f} MiB")
    healthy = sandbox.healthy()
    if healthy:
        try:
            listing = sandbox.client().request("GET", "/api/v1/nodes")
        except ApiError as exc:
            print(f"  nodes: {exc}")
        else:
            print(f"  nodes ({len(listing['items'])}):")
            for item in listing["items"]:
                print(_describe_node(item))
    print(f"export KUBECONFIG={sandbox.kubeconfig}")
    return 0 if healthy else 1


def _kubeconfig(args: argparse.Namespace) -> int:
    from voicefleet.sandbox import manager  # noqa: PLC0415

    sandbox = manager.load(_state_dir(args))
    if sandbox is None:
        _log("no sandbox is running; start one with `voicefleet sandbox up`")
        return 1
    print(sandbox.kubeconfig)
    return 0


def _build(args: argparse.Namespace) -> int:
    from voicefleet.sandbox import build  # noqa: PLC0415

    return build.main(args.names, prog="voicefleet sandbox build")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox",
        help="a local Kubernetes control plane with fake GPU nodes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the sandbox keeps its state "
        "(default: $VOICEFLEET_SANDBOX_DIR or ~/.local/state/voicefleet/sandbox)",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    up = actions.add_parser("up", help="start it (builds the binaries the first time)")
    up.add_argument("--nodes", action="append", default=[], metavar="SPEC", help=NODES_HELP)
    up.add_argument(
        "--real-node",
        action="store_true",
        help="also start a real node (kubelet, containerd, runc) that runs the images of "
        "scripts/build-images.sh; needs root and Debian's containerd, runc and CNI plugins",
    )
    up.set_defaults(func=_up)
    actions.add_parser("down", help="stop it and remove its state").set_defaults(func=_down)
    actions.add_parser("status", help="what runs, its memory and nodes").set_defaults(func=_status)
    actions.add_parser("kubeconfig", help="print the admin kubeconfig's path").set_defaults(
        func=_kubeconfig
    )
    build = actions.add_parser("build", help="build (or reuse) the binaries only")
    build.add_argument("names", nargs="*", metavar="NAME")
    build.set_defaults(func=_build)
