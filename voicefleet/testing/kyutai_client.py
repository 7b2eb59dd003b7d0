"""Kyutai's own command-line client, ``python -m moshi.client``, run headless as a user runs
it: PortAudio's default devices are a private PulseAudio server's null sinks, the
microphone plays speech from espeak-ng in a loop, and the speaker goes nowhere.

What the client prints is all there is to judge it by: the model's text on stdout, its log
lines ("Info: connected!", "Error: Lost connection with the server!") on stderr. Debian's
pulseaudio, pulseaudio-utils, libportaudio2, libasound2-plugins and espeak-ng provide the
rest (``scripts/setup-host.sh`` installs them).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from voicefleet.testing.polling import poll
from voicefleet.testing.processes import terminate

SPEECH = (
    "Hello, can you hear me? I would like to book a table for two people tonight, "
    "somewhere quiet, at about eight o'clock."
)
START_SECONDS = 10.0
# The client's words for the two ways a call ends.
LOST = "Lost connection with the server!"
CLOSED = "Connection closed"


class AudioSetupError(Exception):
    """A program the headless audio needs is missing or did not start."""


def _need(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise AudioSetupError(f"{program} not found: run scripts/setup-host.sh")
    return found


@dataclass
class ClientRun:
    """What one run of the client printed while it ran, and how it ended. What it prints
    once stopped (a Ctrl-C makes its microphone thread write to a closed socket, which it
    reports as a lost connection) is kept apart."""

    stdout: str
    stderr: str
    exit_code: int | None  # None: still running when the test stopped it
    after_stop: str = ""

    @property
    def words(self) -> list[str]:
        return self.stdout.split()

    @property
    def lost_connection(self) -> bool:
        return LOST in self.stderr


class _Reader(threading.Thread):
    """Reads one of the client's pipes as it comes, so output can be split at a moment."""

    def __init__(self, pipe: IO[str]) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.chunks: list[tuple[float, str]] = []

    def run(self) -> None:
        while chunk := self.pipe.read(1):
            self.chunks.append((time.monotonic(), chunk))

    def text(self, before: float = math.inf) -> str:
        return "".join(c for t, c in self.chunks if t < before)

    def text_after(self, moment: float) -> str:
        return "".join(c for t, c in self.chunks if t >= moment)


class HeadlessAudio:
    """A private PulseAudio server: sink ``speaker`` (the default output) and a microphone,
    the monitor of sink ``mic``, into which espeak-ng's speech plays over and over."""

    def __init__(self) -> None:
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="vf-pulse-"))
        self.runtime_dir.chmod(0o700)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(self.runtime_dir)}
        self.env.pop("PULSE_SERVER", None)
        self._server: subprocess.Popen[bytes] | None = None
        self._player: subprocess.Popen[bytes] | None = None
        self.log = self.runtime_dir / "pulseaudio.log"

    def __enter__(self) -> HeadlessAudio:
        pulseaudio = _need("pulseaudio")
        speech = self.runtime_dir / "speech.wav"
        subprocess.run([_need("espeak-ng"), "-w", str(speech), SPEECH], check=True)
        with self.log.open("wb") as log:
            self._server = subprocess.Popen(
                [
                    pulseaudio,
                    "-n",  # no default.pa: only the modules named here
                    "--daemonize=no",
                    "--exit-idle-time=-1",
                    "--use-pid-file=no",
                    "-L",
                    "module-native-protocol-unix",
                    "-L",
                    "module-null-sink sink_name=speaker",
                    "-L",
                    "module-null-sink sink_name=mic",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        pactl = _need("pactl")
        if not poll(
            lambda: (
                subprocess.run(
                    [pactl, "info"], check=False, env=self.env, capture_output=True
                ).returncode
                == 0
            ),
            START_SECONDS,
            0.1,
        ):
            self.__exit__(None, None, None)
            raise AudioSetupError(f"pulseaudio did not start: {self.log.read_text()[-2000:]}")
        subprocess.run([pactl, "set-default-sink", "speaker"], env=self.env, check=True)
        subprocess.run([pactl, "set-default-source", "mic.monitor"], env=self.env, check=True)
        loop = f"while :; do {_need('paplay')} --device=mic {speech}; done"
        self._player = subprocess.Popen(["sh", "-c", loop], env=self.env, start_new_session=True)
        return self

    def client(self, url: str) -> subprocess.Popen[str]:
        """Start ``python -m moshi.client --url URL`` on these devices."""
        return subprocess.Popen(
            [sys.executable, "-m", "moshi.client", "--url", url],
            env={**self.env, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_client(self, url: str, seconds: float) -> ClientRun:
        """Run the client for ``seconds`` (or until it exits) and collect what it printed."""
        process = self.client(url)
        assert process.stdout is not None and process.stderr is not None
        readers = [_Reader(process.stdout), _Reader(process.stderr)]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + seconds
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        exit_code = process.poll()
        stopped = time.monotonic()
        if exit_code is None:
            process.send_signal(signal.SIGINT)  # as a user's Ctrl-C
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for reader in readers:
            reader.join(timeout=5)
        out, err = readers
        return ClientRun(out.text(stopped), err.text(stopped), exit_code, err.text_after(stopped))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._player is not None and self._player.poll() is None:
            os.killpg(self._player.pid, signal.SIGKILL)
            self._player.wait()
        if self._server is not None:
            terminate(self._server)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
