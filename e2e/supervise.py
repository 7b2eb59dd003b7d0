"""The operator's replicas kept running as a kubelet keeps a Deployment's containers, and who
leads, read from the leader election Lease.

A real cluster restarts a replica that exits: one that was killed, or a leader that lost its
lease (it exits with code 3 on purpose, to come back as a standby). The chaos run does the
same to its host processes, after a delay it chooses per exit (a kubelet restarts at once,
then backs off), and counts every restart with the exit code that caused it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from kubernetes import client

from voicefleet import constants
from voicefleet.testing.operators import Operator, Replicas
from voicefleet.testing.polling import HarnessError, poll

CHECK_SECONDS: Final = 0.2
RETRY_START_SECONDS: Final = 2.0


@dataclass(frozen=True)
class Restart:
    replica: str
    exit_code: int | None  # negative: killed by that signal
    exited: float  # time.monotonic()
    started: float


@dataclass(frozen=True)
class Holder:
    """The Lease's record: who holds it and when it was last renewed (epoch seconds)."""

    identity: str | None
    renewed: float | None


def _epoch(stamp: object) -> float | None:
    if stamp is None:
        return None
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


@dataclass
class Supervisor:
    """Restarts any replica that exits, ``delay`` seconds after its exit (per exit: see
    :meth:`kill`)."""

    replicas: Replicas
    api: client.ApiClient
    namespace: str
    delay: float = 0.0
    restarts: list[Restart] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._due: dict[str, tuple[float, float, int | None]] = {}  # name -> (at, exited, code)
        self._next_delay: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self.leases = client.CoordinationV1Api(self.api)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=90)
        with self.lock:
            self.replicas.stop()

    # --- the lease -----------------------------------------------------------------------

    def holder(self) -> Holder:
        lease = self.leases.read_namespaced_lease(
            constants.OPERATOR_LEASE, self.namespace, _request_timeout=5
        )
        return Holder(lease.spec.holder_identity, _epoch(lease.spec.renew_time))

    def leader(self, fresh_seconds: float = 5.0) -> Operator | None:
        """The replica that holds the lease and renewed it lately, if its process runs."""
        found = self.holder()
        if found.renewed is None or found.renewed < time.time() - fresh_seconds:
            return None
        with self.lock:
            for operator in self.replicas.operators:
                if operator.name == found.identity and _alive(operator):
                    return operator
        return None

    def renewed_after(self, since: float, timeout: float) -> tuple[float, str | None] | None:
        """(seconds from ``since``, an epoch time, to the first renewal after it, who
        renewed), by the lease's own renewTime; None after ``timeout``."""

        def renewed() -> tuple[float, str | None] | None:
            try:
                found = self.holder()
            except Exception:  # the API server may be coming back
                return None
            if found.renewed is not None and found.renewed > since:
                return found.renewed - since, found.identity
            return None

        result: tuple[float, str | None] | None = poll(renewed, timeout, 0.1)
        return result

    # --- the processes -------------------------------------------------------------------

    def kill(self, operator: Operator, restart_after: float) -> float:
        """SIGKILL ``operator``; it is restarted ``restart_after`` seconds later. Returns
        the epoch time of the kill."""
        with self.lock:
            self._next_delay[operator.name] = restart_after
            process = operator.process
            if process is None or process.poll() is not None:
                raise HarnessError(f"{operator.name} does not run")
            killed = time.time()
            os.kill(process.pid, signal.SIGKILL)
        return killed

    def all_running(self) -> bool:
        with self.lock:
            return all(_alive(o) for o in self.replicas.operators) and not self._due

    def _run(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            for operator in self.replicas.operators:
                self._check(operator)

    def _check(self, operator: Operator) -> None:
        now = time.monotonic()
        with self.lock:
            process = operator.process
            if process is not None and process.poll() is not None:
                code = process.returncode
                operator.stop()  # notes the exit code, forgets the process
                delay = self._next_delay.pop(operator.name, self.delay)
                self._due[operator.name] = (now + delay, now, code)
            due = self._due.get(operator.name)
        if due is None or now < due[0]:
            return
        # Outside the lock: a start waits up to a minute for the liveness endpoint, and
        # the run must be able to read the lease and pick the leader meanwhile.
        try:
            operator.start()
        except HarnessError as exc:
            self.problems.append(f"{operator.name} did not start again: {exc}")
            with self.lock:
                operator.stop(signal.SIGKILL)  # if it hangs rather than exited
                self._due[operator.name] = (now + RETRY_START_SECONDS, due[1], due[2])
            return
        with self.lock:
            del self._due[operator.name]
            self.restarts.append(Restart(operator.name, due[2], due[1], time.monotonic()))


def _alive(operator: Operator) -> bool:
    return operator.process is not None and operator.process.poll() is None
