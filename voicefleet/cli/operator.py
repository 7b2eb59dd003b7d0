"""``voicefleet operator``: run the operator (``run``) or print its RBAC (``rbac``).

``run`` wraps kopf: leader election on a Lease (several replicas, one active), a liveness
endpoint, Prometheus metrics (``voicefleet_operator_*``) and structured (JSON) logs. kopf
and the Kubernetes client are imported only when the command runs, so ``voicefleet plan``
stays light.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicefleet import catalog, constants
from voicefleet.operator.interruption import (
    DEFAULT_MASS_NOT_READY_FRACTION,
    DEFAULT_NOT_READY_GRACE_SECONDS,
)

if TYPE_CHECKING:
    from voicefleet.operator.leader import LeaseSettings

DEFAULT_METRICS_PORT = 9090
DEFAULT_HEALTH_PORT = 8080
# client-go's defaults (kube-controller-manager's --leader-elect-* flags).
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "operator", help="run the VoiceAgentPool operator, or print its RBAC"
    )
    commands = parser.add_subparsers(dest="operator_command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the operator (kopf) against the current cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="reconcile pools in NS only (repeat for several)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="reconcile pools in every namespace"
    )
    run.add_argument(
        "--operator-namespace",
        default=None,
        help="the operator's own namespace, where its token key Secret lives "
        "(default: the in-cluster namespace, else voicefleet-system)",
    )
    run.add_argument("--metrics-host", default="0.0.0.0")
    run.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT)
    run.add_argument(
        "--health-host", default="0.0.0.0", help="address of the liveness endpoint /healthz"
    )
    run.add_argument("--health-port", type=int, default=DEFAULT_HEALTH_PORT)
    election = run.add_argument_group(
        "leader election",
        "Replicas elect one active on a coordination.k8s.io Lease named "
        f"{constants.OPERATOR_LEASE} in the operator's namespace; the others stand by.",
    )
    election.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="elect a leader before acting (default: on; off only for a single process "
        "that no other can ever run beside)",
    )
    election.add_argument(
        "--leader-elect-lease-duration",
        type=float,
        default=DEFAULT_LEASE_DURATION,
        metavar="SECONDS",
        help="a standby takes the lease once it has not been renewed this long",
    )
    election.add_argument(
        "--leader-elect-renew-deadline",
        type=float,
        default=DEFAULT_RENEW_DEADLINE,
        metavar="SECONDS",
        help="the leader exits when it could not renew for this long (below the duration)",
    )
    election.add_argument(
        "--leader-elect-retry-period",
        type=float,
        default=DEFAULT_RETRY_PERIOD,
        metavar="SECONDS",
        help="between two tries to acquire or renew",
    )
    election.add_argument(
        "--leader-elect-identity",
        default=None,
        metavar="ID",
        help="this replica's name in the Lease (the chart passes the pod name); "
        "default: host name and a random suffix",
    )
    run.add_argument(
        "--interruption-taint",
        action="append",
        default=[],
        metavar="KEY",
        help="taint key that means the node is going away; replaces the defaults, or adds "
        "to them as +KEY (repeat)",
    )
    run.add_argument(
        "--interruption-label",
        action="append",
        default=[],
        metavar="KEY",
        help="label key that means the node is going away (as --interruption-taint)",
    )
    run.add_argument(
        "--no-cordon-signal",
        action="store_true",
        help="do not treat a cordoned node as going away",
    )
    run.add_argument(
        "--not-ready-grace-seconds",
        type=float,
        default=DEFAULT_NOT_READY_GRACE_SECONDS,
        help="seconds a node must stay NotReady before its pods are drained (default "
        f"{DEFAULT_NOT_READY_GRACE_SECONDS:.0f})",
    )
    run.add_argument(
        "--mass-not-ready-fraction",
        type=float,
        default=DEFAULT_MASS_NOT_READY_FRACTION,
        metavar="FRACTION",
        help="when at least this share of all nodes (and at least 3) is NotReady at once, "
        f"NotReady drains nothing: a control-plane or network fault (default "
        f"{DEFAULT_MASS_NOT_READY_FRACTION})",
    )
    run.add_argument("--spot-fallback-seconds", type=float, default=120.0)
    run.add_argument("--poll-interval", type=float, default=2.0, help="runtime poll, seconds")
    run.add_argument("--runtime-timeout", type=float, default=1.0)
    run.add_argument("--runtime-port", type=int, default=constants.RUNTIME_PORT)
    run.add_argument("--not-ready-timeout", type=float, default=600.0)
    run.add_argument("--grace-margin-seconds", type=int, default=30)
    run.add_argument(
        "--runtime-image",
        default=constants.DEFAULT_RUNTIME_IMAGE,
        help="runtime image of pools whose spec.runtime.image is empty (default: this "
        "operator's version)",
    )
    run.add_argument(
        "--gateway-image",
        default=constants.DEFAULT_GATEWAY_IMAGE,
        help="image of the pools' gateways: the operator's own (default: this operator's "
        "version), which has the gateway and no torch",
    )
    run.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help="price table laid over the built-in one for every pool (shape of prices.yaml)",
    )
    run.add_argument(
        "--gpu-catalog",
        type=Path,
        metavar="FILE",
        help="GPU products laid over the built-in catalog (shape of gpus.yaml)",
    )
    run.add_argument("--log-format", choices=("json", "plain"), default="json")
    run.add_argument("--verbose", "-v", action="store_true")
    run.set_defaults(func=run_operator)

    rbac = commands.add_parser("rbac", help="print the operator's least-privilege RBAC")
    rbac.add_argument(
        "--namespace", "-n", default="voicefleet-system", help="the operator's own namespace"
    )
    rbac.add_argument(
        "--watch-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="RBAC for an operator run with --namespace NS (repeat): Roles in those "
        "namespaces instead of cluster-wide rules for pods, Secrets and the rest",
    )
    rbac.add_argument(
        "--write",
        metavar="DIR",
        type=Path,
        help="write the rules file the chart embeds into DIR (charts/voicefleet/files)",
    )
    rbac.set_defaults(func=run_rbac)


def run_rbac(args: argparse.Namespace) -> int:
    from voicefleet.operator import rbac  # noqa: PLC0415 (light, but keeps the pattern)

    if args.write is None:
        print(rbac.render_manifests(args.namespace, args.watch_namespace), end="")
        return 0
    target = args.write / rbac.RULES_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(rbac.render_rules(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


def _in_cluster_namespace() -> str | None:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else None


def _lease_settings(args: argparse.Namespace, namespace: str) -> LeaseSettings | str:
    """The Lease settings, or a message naming the flag to change."""
    from voicefleet.operator.leader import LeaseSettings, default_identity  # noqa: PLC0415

    duration = args.leader_elect_lease_duration
    deadline = args.leader_elect_renew_deadline
    retry = args.leader_elect_retry_period
    if retry <= 0:
        return f"--leader-elect-retry-period must be above 0 (got {retry:g})"
    if deadline <= retry:
        return (
            f"--leader-elect-renew-deadline ({deadline:g} s) must be longer than "
            f"--leader-elect-retry-period ({retry:g} s)"
        )
    if duration <= deadline:
        # The leader must stop before a standby may start: the gap is the safety margin.
        return (
            f"--leader-elect-lease-duration ({duration:g} s) must be longer than "
            f"--leader-elect-renew-deadline ({deadline:g} s)"
        )
    if args.leader_elect_identity == "":
        return "--leader-elect-identity must not be empty"
    return LeaseSettings(
        namespace=namespace,
        identity=args.leader_elect_identity or default_identity(),
        lease_duration=duration,
        renew_deadline=deadline,
        retry_period=retry,
    )


def run_operator(args: argparse.Namespace) -> int:
    # kopf, aiohttp and the Kubernetes client load only for this command.
    import kopf  # noqa: PLC0415
    from prometheus_client import start_http_server  # noqa: PLC0415

    from voicefleet.operator import handlers, interruption, process  # noqa: PLC0415
    from voicefleet.operator.builders import PodSettings  # noqa: PLC0415
    from voicefleet.operator.config import (  # noqa: PLC0415
        DEFAULT_OPERATOR_NAMESPACE,
        OperatorConfig,
    )

    try:
        tables = catalog.load(gpus_file=args.gpu_catalog, prices_file=args.prices)
    except catalog.CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    operator_namespace = (
        args.operator_namespace or _in_cluster_namespace() or DEFAULT_OPERATOR_NAMESPACE
    )
    lease: LeaseSettings | None = None
    if args.leader_elect:
        checked = _lease_settings(args, operator_namespace)
        if isinstance(checked, str):
            print(f"error: {checked}", file=sys.stderr)
            return 2
        lease = checked
    config = OperatorConfig(
        namespaces=tuple(args.namespace),
        all_namespaces=args.all_namespaces or not args.namespace,
        operator_namespace=operator_namespace,
        signals=interruption.SignalConfig(
            taints=interruption.parse_keys(args.interruption_taint, interruption.DEFAULT_TAINTS),
            labels=interruption.parse_keys(args.interruption_label, interruption.DEFAULT_LABELS),
            cordon=not args.no_cordon_signal,
            not_ready_grace_seconds=args.not_ready_grace_seconds,
            mass_not_ready_fraction=args.mass_not_ready_fraction,
        ),
        pods=PodSettings(
            grace_margin_seconds=args.grace_margin_seconds,
            runtime_image=args.runtime_image,
            gateway_image=args.gateway_image,
        ),
        spot_fallback_seconds=args.spot_fallback_seconds,
        poll_interval_seconds=args.poll_interval,
        runtime_timeout_seconds=args.runtime_timeout,
        runtime_port=args.runtime_port,
        not_ready_timeout_seconds=args.not_ready_timeout,
        catalog=tables,
    )
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf logs every handler run at INFO ("Handler ... succeeded"): one line per Node
        # heartbeat on a large cluster. Warnings and errors still come through.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    start_http_server(args.metrics_port, addr=args.metrics_host)
    settings = process.ProcessSettings(
        health_host=args.health_host, health_port=args.health_port, lease=lease
    )
    return asyncio.run(process.serve(handlers.build_registry(config), config, settings))
