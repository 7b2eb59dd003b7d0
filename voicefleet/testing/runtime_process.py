"""Starts ``voicefleet runtime serve --backend tiny`` (or another backend) as a real process
on a loopback port, and stops it; the tests talk to it only over HTTP and WebSocket, like any
caller."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from voicefleet.testing.loopback import free_port, http
from voicefleet.testing.polling import poll

# Model load and warm-up take seconds alone, far more when other work shares the two cores.
READY_TIMEOUT_SECONDS = 180.0
METRIC_PREFIX = "voicefleet_runtime_"


@dataclass
class LoopbackProcess:
    """A process of ours serving HTTP on a loopback port, its output in a log file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class RuntimeServer(LoopbackProcess):
    token: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log()}")
            try:
                if http("GET", f"{self.http}/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready in {READY_TIMEOUT_SECONDS} s:\n{self.log()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``, keyed by (name, sorted labels)."""
        body = http("GET", f"{self.http}/metrics")[2].decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (``voicefleet_runtime_`` is added); 0 when absent."""
        key = (METRIC_PREFIX + name, tuple(sorted(labels.items())))
        return self.metrics().get(key, 0.0)

    def status(self) -> dict[str, object]:
        answer: dict[str, object] = json.loads(http("GET", f"{self.http}/v1/status")[2])
        return answer

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every slot is free again (a leave takes effect on the next tick)."""

        def idle() -> bool:
            sessions = self.status()["sessions"]
            assert isinstance(sessions, dict)
            return sessions["active"] == 0 and http("GET", f"{self.http}/readyz")[0] == 200

        if not poll(idle, timeout, 0.1):
            raise TimeoutError(f"sessions still active: {self.status()}")

    def codec_worker_pids(self) -> list[int]:
        """The codec worker processes: children started by multiprocessing's spawn."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after it.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == self.process.pid and b"spawn_main" in cmdline:
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def stop(self) -> None:
        stop_process(self.process, 15)


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Two signals (the second skips any drain), then a kill if it has not exited by then."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def start_server(
    tmp_path: Path,
    *,
    max_sessions: int,
    max_session_seconds: int,
    token: str | None = None,
    drain_seconds: int = 30,
    reconnect_url: str | None = None,
    codec_workers: int = 1,
    extra_args: Sequence[str] = (),
    module: str = "voicefleet",
    environment: Mapping[str, str] | None = None,
    backend: str = "tiny",
) -> RuntimeServer:
    """``module`` is what ``python -m`` runs: the real command, or a test's wrapper of it."""
    port = free_port()
    log_path = tmp_path / f"runtime-{port}.log"
    env = {k: v for k, v in os.environ.items() if k != "VOICEFLEET_POOL_TOKEN"}
    if token is not None:
        env["VOICEFLEET_POOL_TOKEN"] = token
    # One torch thread: the codec worker and the test clients need the other core.
    env["OMP_NUM_THREADS"] = "1"
    env.update(environment or {})
    command = [
        sys.executable,
        "-m",
        module,
        "runtime",
        "serve",
        f"--backend={backend}",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--max-sessions={max_sessions}",
        f"--max-session-seconds={max_session_seconds}",
        f"--drain-seconds={drain_seconds}",
        f"--codec-workers={codec_workers}",
        *extra_args,
    ]
    if reconnect_url:
        command.append(f"--reconnect-url={reconnect_url}")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = RuntimeServer(process, port, log_path, token)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server
