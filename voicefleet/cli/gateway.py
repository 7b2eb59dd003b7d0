"""``voicefleet gateway``: the CPU-only session gateway in front of a pool's runtime pods
(no torch: it starts in a second on a small node)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voicefleet import constants
from voicefleet.cli.pool_token import pool_token
from voicefleet.cli.runtime import positive_seconds
from voicefleet.gateway import limits
from voicefleet.runtime import limits as runtime_limits


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="Admit, queue and relay conversations in front of a pool's runtime pods.",
        description=(
            "Terminates callers on every protocol the runtime speaks "
            f"({constants.PATH_MOSHI_CHAT}, {constants.PATH_PCM}, {constants.PATH_AUDIO}), "
            "admits each new conversation to the backend with the most free slots, holds "
            "callers in a bounded queue while the whole pool is full (the Moshi handshake "
            "waits meanwhile) and relays every message unchanged. Control: "
            f"{constants.PATH_HEALTHZ}, {constants.PATH_READYZ}, {constants.PATH_METRICS}, "
            f"{constants.PATH_STATUS}. SIGTERM: no new conversations, live ones kept until "
            "they end or --drain-seconds passes, then exit 0."
        ),
    )
    parser.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="URL",
        help="a runtime pod, http://host:port (repeat for each)",
    )
    parser.add_argument(
        "--backends-dns",
        metavar="NAME:PORT",
        help="every address NAME resolves to is a runtime pod on PORT, resolved again every "
        "--poll-seconds (a pool's headless Service: <pool>-pods.<namespace>.svc:8998)",
    )
    parser.add_argument(
        "--backends-pushed",
        action="store_true",
        help=f"the operator sends the pool's runtime pods (PUT {constants.PATH_BACKENDS}, "
        "signed with the pool token, which this then needs): how the operator runs it",
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=constants.RUNTIME_PORT)
    parser.add_argument(
        "--queue-max",
        type=_count,
        default=limits.QUEUE_MAX,
        help=f"callers held while the pool is full; more are refused (default {limits.QUEUE_MAX})",
    )
    parser.add_argument(
        "--queue-wait-seconds",
        type=positive_seconds,
        default=limits.QUEUE_WAIT_SECONDS,
        help="how long a held caller waits for a slot before it is refused "
        f"(default {limits.QUEUE_WAIT_SECONDS:g})",
    )
    parser.add_argument(
        "--drain-seconds",
        type=positive_seconds,
        default=limits.DRAIN_SECONDS,
        help="after SIGTERM, how long live conversations are still relayed "
        f"(default {limits.DRAIN_SECONDS:g})",
    )
    parser.add_argument(
        "--poll-seconds",
        type=positive_seconds,
        default=limits.POLL_SECONDS,
        help=f"period of each backend's {constants.PATH_STATUS} poll "
        f"(default {limits.POLL_SECONDS:g})",
    )
    parser.add_argument(
        "--header-timeout-seconds",
        type=positive_seconds,
        default=runtime_limits.HEADER_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="close a connection that has not sent a whole request line and headers by then "
        f"(default {runtime_limits.HEADER_TIMEOUT_SECONDS:g}, as the runtime's)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file with the pool token (else $" + constants.ENV_POOL_TOKEN + "): with it, "
        "conversations on a draining pod are moved to another pod instead of being told to "
        "reconnect",
    )
    parser.set_defaults(func=_serve)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _serve(args: argparse.Namespace) -> int:
    from voicefleet.gateway.config import GatewayConfig  # noqa: PLC0415
    from voicefleet.gateway.server import serve  # noqa: PLC0415

    bad = [url for url in args.backend if not url.startswith(("http://", "https://"))]
    if bad:
        print(f"--backend takes http://host:port URLs, not {', '.join(bad)}", file=sys.stderr)
        return 2
    if sum(map(bool, (args.backend, args.backends_dns, args.backends_pushed))) != 1:
        print(
            "give one of --backend URL (repeated), --backends-dns NAME:PORT or --backends-pushed",
            file=sys.stderr,
        )
        return 2
    if args.backends_dns is not None:
        name, _, port = args.backends_dns.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            print(f"--backends-dns takes NAME:PORT, not {args.backends_dns}", file=sys.stderr)
            return 2
    token = pool_token(args.token_file)
    if args.backends_pushed and token is None:
        print(
            "--backends-pushed needs the pool token (--token-file or $"
            + constants.ENV_POOL_TOKEN
            + ") to check what the operator sends",
            file=sys.stderr,
        )
        return 2
    config = GatewayConfig(
        backends=tuple(args.backend),
        host=args.host,
        port=args.port,
        queue_max=args.queue_max,
        queue_wait_seconds=args.queue_wait_seconds,
        drain_seconds=args.drain_seconds,
        poll_seconds=args.poll_seconds,
        header_timeout_seconds=args.header_timeout_seconds,
        token=token,
        backends_dns=args.backends_dns,
        backends_pushed=args.backends_pushed,
    )
    return serve(config)
