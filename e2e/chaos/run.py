"""One chaos run in order: the chart and its supervised operators, the pool, each scenario
in turn, then the cluster left as the run found it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from e2e import fleet
from e2e.chaos import burst, faults, spot
from e2e.chaos.context import Log, Run
from e2e.chaos.report import Result, Row
from e2e.chaos.settings import DEFAULTS, NAMESPACE, POOL, Settings, pool_spec
from e2e.supervise import Supervisor
from voicefleet.sandbox import processes
from voicefleet.testing import operators

# The scenarios by name, in the order a full run takes them.
SCENARIOS: Final[dict[str, Callable[[Run], Row]]] = {
    "node_blip": faults.node_blip,
    "all_not_ready": faults.all_not_ready,
    "api_outage": faults.api_outage,
    "kills_while_scaling": faults.kills_while_scaling,
    "mass_spot_interruption": spot.mass_spot_interruption,
    "spot_recovery": spot.spot_recovery,
    "pool_burst": burst.pool_burst,
}


class Chaos:
    """One chaos run on a sandbox whose kube-apiserver runs as ``apiserver``; it installs
    the chart itself, and uninstalls it at the end."""

    def __init__(
        self,
        cluster: fleet.Cluster,
        apiserver: processes.Process,
        workdir: Path,
        settings: Settings = DEFAULTS,
        log: Log = print,
    ) -> None:
        self.workdir = workdir
        self.context = Run.new(cluster, apiserver, settings, log)
        self.cleanup_problems: list[str] = []

    def run(self) -> Result:
        run = self.context
        started = time.monotonic()
        load = os.getloadavg()[0]
        rows: list[Row] = []
        replicas: operators.Replicas | None = None
        try:
            fleet.install_chart(
                run.cluster,
                [f"interruption.spotFallbackSeconds={run.settings.spot_fallback_seconds}"],
            )
            replicas = fleet.start_operators(run.cluster, self.workdir)
            run.supervisor = Supervisor(replicas, run.cluster.api, fleet.OPERATOR_NAMESPACE)
            run.supervisor.start()
            run.changes.namespace()
            run.monitor.listeners.append(run.kubelet.follow)
            run.monitor.start()
            run.changes.apply(POOL, pool_spec(run.target, run.settings.drain_seconds))
            run.view.must_settle(run.target, "the pool's first pods")
            for name in run.settings.scenarios or tuple(SCENARIOS):
                run.log(f"chaos: {name}")
                began = time.monotonic()
                rows.append(SCENARIOS[name](run))
                rows[-1].seconds = time.monotonic() - began
                run.log(f"chaos: {rows[-1].scenario}: {'ok' if rows[-1].ok else rows[-1].failures}")
        finally:
            self._teardown(replicas)
        supervisor = run.supervisor
        return Result(
            rows=rows,
            kills=run.kills,
            restarts=[(r.replica, r.exit_code) for r in supervisor.restarts] if supervisor else [],
            wall_seconds=time.monotonic() - started,
            load=(load, os.getloadavg()[0]),
            settings=run.settings,
            problems=[
                *run.kubelet.problems,
                *(supervisor.problems if supervisor else []),
                *self.cleanup_problems,
            ],
            tracebacks=replicas.tracebacks() if replicas else [],
        )

    def _teardown(self, replicas: operators.Replicas | None) -> None:
        """Leave the cluster as the run found it, every step tried whatever failed before
        (a failure is one of the run's problems)."""
        run = self.context

        def stop_operators() -> None:
            if run.supervisor is not None:
                run.supervisor.stop()
            elif replicas is not None:
                replicas.stop()

        steps: list[Callable[[], object]] = [
            lambda: run.changes.delete_pool(POOL),
            stop_operators,
            run.monitor.stop,
            run.kubelet.stop,
            run.changes.restore_nodes,
            lambda: run.view.core.delete_namespace(NAMESPACE),
            lambda: fleet.uninstall_chart(run.cluster),
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:  # every step is tried; the first failure is reported
                self.cleanup_problems.append(f"cleaning up: {exc!r}")
                run.log(self.cleanup_problems[-1])
