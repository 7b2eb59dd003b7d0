"""Start, find and stop the sandbox's processes by pid.

Each component runs detached in its own session (so ``voicefleet sandbox up`` can exit and
Ctrl-C in the shell does not reach it), logs to ``<state>/logs/<name>.log``, and is found
again through the pid recorded in the state file. A pid alone could have been reused by an
unrelated process after a reboot, so a pid counts as ours only while ``/proc/<pid>/exe``
is the binary we started.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from voicefleet.sandbox import netns

STOP_GRACE_SECONDS: Final = 10.0
POLL_SECONDS: Final = 0.1
PR_SET_PDEATHSIG: Final = 1  # from <linux/prctl.h>


@dataclass(frozen=True)
class Process:
    """A started component: what it is, its pid and where it logs."""

    name: str
    pid: int
    binary: str
    log: Path


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started us dies.

    For sandboxes owned by a test run: a test runner killed by a time-out must not leave
    a control plane running. Linux only (prctl); elsewhere the child simply lives on.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    *,
    tie_to_parent: bool = False,
    netns_name: str | None = None,
) -> Process:
    """Start ``argv`` detached, logging to ``log``; with ``tie_to_parent`` it dies with us;
    with ``netns_name`` it runs in that network namespace (the real node's)."""
    log.parent.mkdir(parents=True, exist_ok=True)

    def before_exec() -> None:
        if tie_to_parent:
            _die_with_parent()
        if netns_name is not None:
            netns.enter(netns_name)

    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=before_exec if tie_to_parent or netns_name else None,  # noqa: PLW1509
        )
    return Process(name=name, pid=popen.pid, binary=str(argv[0]), log=log)


def _exe(pid: int) -> str | None:
    """The binary a pid runs; None for no such process, a zombie or a kernel thread.

    Why /proc/<pid>/exe and not cmdline: the kernel sets exe early in exec, while cmdline
    is briefly empty after Popen returns, which would make a healthy start look dead.
    """
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process, so it is no zombie."""
    # Not our child (started by an earlier `sandbox up`): then init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def is_running(process: Process) -> bool:
    _reap(process.pid)
    return _exe(process.pid) == os.path.realpath(process.binary)


def stop(process: Process, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
    if not is_running(process):
        return
    try:
        os.kill(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_running(process):
            return
        time.sleep(POLL_SECONDS)
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while is_running(process):
        time.sleep(POLL_SECONDS)


def rss_kib(pid: int) -> int:
    """Resident memory of one process (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
