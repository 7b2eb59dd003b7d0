"""``python -m e2e.chaos``: a chaos run on a sandbox of its own (or a running one), its
summary and table printed."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kubernetes import config

import e2e.chaos
from e2e import fleet
from e2e.chaos.report import summary, table
from e2e.chaos.run import SCENARIOS, Chaos
from e2e.chaos.settings import Settings
from voicefleet.sandbox import binaries, manager


def main(argv: Sequence[str] | None = None) -> int:
    doc = e2e.chaos.__doc__ or ""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="a running sandbox's state directory to use (default: start one of its own)",
    )
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=tuple(SCENARIOS),
        help="run only this scenario (repeat for more; default: all, in order)",
    )
    args = parser.parse_args(argv)
    settings = Settings(seed=args.seed, scenarios=tuple(args.scenario or ()))
    own = args.state_dir is None
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="voicefleet-chaos-")) / "state"
    sandbox = manager.load(state_dir) if not own else None
    if sandbox is None:
        sandbox = manager.up(state_dir, fleet.E2E_NODES, log=print, tie_to_caller=True)
        own = True
    try:
        helm = binaries.cached("helm")
        kubectl = binaries.cached("kubectl")
        if helm is None or kubectl is None:
            print("no helm or kubectl: run e2e/build-sandbox.sh", file=sys.stderr)
            return 2
        api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
        cluster = fleet.Cluster(sandbox.kubeconfig, str(kubectl), str(helm), api)
        (apiserver,) = [p for p in sandbox.processes if p.name == "kube-apiserver"]
        with tempfile.TemporaryDirectory(prefix="voicefleet-chaos-") as workdir:
            result = Chaos(cluster, apiserver, Path(workdir), settings).run()
        print(summary(result))
        print(table(result))
        return 0 if result.ok else 1
    finally:
        if own:
            manager.down(state_dir, log=lambda _line: None)


if __name__ == "__main__":
    sys.exit(main())
