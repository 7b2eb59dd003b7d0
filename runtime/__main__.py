"""``python -m voicefleet.runtime serve ...``: the runtime's command without the rest of the
``voicefleet`` CLI, for images and machines that carry only the runtime's dependencies."""

from __future__ import annotations

import argparse
import sys

from voicefleet.cli import runtime


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m voicefleet.runtime")
    subparsers = parser.add_subparsers(dest="command", required=True)
    runtime.register(subparsers)
    # `serve` lives under `runtime` in the main CLI; accept it bare here too.
    args = parser.parse_args(["runtime", *sys.argv[1:]])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
