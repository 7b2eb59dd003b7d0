"""The ``voicefleet`` command: one sub-command per module in this package.

Each module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed namespace and returning the exit code. Heavy imports (torch,
kopf) happen inside those callables, so ``voicefleet plan`` starts fast and works with the
core install alone.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from voicefleet import __version__

# Sub-command modules, in the order `voicefleet --help` lists them.
COMMAND_MODULES = (
    "voicefleet.cli.plan",
    "voicefleet.cli.crd",
    "voicefleet.cli.sandbox",
    "voicefleet.cli.runtime",
    "voicefleet.cli.gateway",
    "voicefleet.cli.operator",
)

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad input a sub-command found after parsing: its message says what to change; the
    command exits with status 2, as argparse's own errors do."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicefleet",
        description="Run fleets of full-duplex voice agents on Kubernetes GPUs.",
    )
    parser.add_argument("--version", action="version", version=f"voicefleet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A sub-command whose module is not written yet is simply absent.
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
