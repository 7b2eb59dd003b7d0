"""Starts ``voicefleet gateway`` as a real process on a loopback port in front of the given
backends, and stops it; tests and the benchmark talk to it only over HTTP and WebSocket."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from voicefleet import constants
from voicefleet.testing.loopback import free_port, http
from voicefleet.testing.runtime_process import LoopbackProcess, stop_process

READY_TIMEOUT_SECONDS = 30.0


@dataclass
class GatewayProcess(LoopbackProcess):
    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(http("GET", f"{self.http}{constants.PATH_STATUS}")[2])
        return answer

    def backend(self, url: str) -> dict[str, Any]:
        """One backend's entry of ``/v1/status``."""
        return next(b for b in self.status()["backends"] if b["url"] == url)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (``voicefleet_gateway_`` is added); 0 when absent."""
        body = http("GET", f"{self.http}{constants.PATH_METRICS}")[2].decode()
        wanted = constants.GATEWAY_METRIC_PREFIX + name
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == wanted and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def answers(self, path: str) -> bool:
        """Whether ``path`` answers 200."""
        try:
            return http("GET", f"{self.http}{path}")[0] == 200
        except OSError:
            return False

    def ready(self) -> bool:
        return self.answers(constants.PATH_READYZ)

    def wait_for(self, path: str) -> None:
        """Until ``path`` answers 200."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited {self.process.returncode}:\n{self.log()}")
            if self.answers(path):
                return
            time.sleep(0.1)
        raise TimeoutError(
            f"gateway: no 200 from {path} in {READY_TIMEOUT_SECONDS} s:\n{self.log()}"
        )

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        stop_process(self.process, 10)


def start_gateway(
    tmp_path: Path, backends: Sequence[str], extra_args: Sequence[str] = (), *, ready: bool = True
) -> GatewayProcess:
    """``backends`` are http://host:port URLs. Returns once it listens, and with ``ready``
    once a backend is in rotation."""
    port = free_port()
    log_path = tmp_path / f"gateway-{port}.log"
    command = [
        sys.executable,
        "-m",
        "voicefleet",
        "gateway",
        "--host=127.0.0.1",
        f"--port={port}",
        *(f"--backend={url}" for url in backends),
        *extra_args,
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    gateway = GatewayProcess(process, port, log_path)
    try:
        gateway.wait_for(constants.PATH_READYZ if ready else constants.PATH_HEALTHZ)
    except BaseException:
        gateway.stop()
        raise
    return gateway
