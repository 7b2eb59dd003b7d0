"""A sandbox's record: where it lives, what it runs and on which ports, kept in
``<state>/state.json`` and rewritten after every start, so ``down`` finds every pid."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from voicefleet.sandbox import processes
from voicefleet.sandbox.api import Client, Credentials
from voicefleet.sandbox.components import Layout
from voicefleet.sandbox.processes import Process
from voicefleet.sandbox.versions import KUBERNETES_VERSION

ENV_STATE_DIR: Final = "VOICEFLEET_SANDBOX_DIR"


class SandboxError(RuntimeError):
    """The sandbox could not be started; the message says which part and where its log is."""


def default_state_dir() -> Path:
    """``$VOICEFLEET_SANDBOX_DIR`` or ``$XDG_STATE_HOME/voicefleet/sandbox``."""
    override = os.environ.get(ENV_STATE_DIR)
    if override:
        return Path(override).expanduser()
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "voicefleet" / "sandbox"


@dataclass
class Sandbox:
    """A running sandbox, as recorded in ``<state>/state.json``."""

    state_dir: Path
    server: str
    kubeconfig: Path
    pod_network: str
    ports: dict[str, int]
    kubernetes_version: str = KUBERNETES_VERSION
    processes: list[Process] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    started_seconds: float = 0.0
    # The real node (node.py): its network namespace and containerd's image root.
    real_node_netns: str | None = None
    real_node_images: str | None = None

    @property
    def layout(self) -> Layout:
        return Layout(self.state_dir)

    def credentials(self) -> Credentials:
        directory = self.layout.pki
        return Credentials(
            self.server, directory / "ca.crt", directory / "admin.crt", directory / "admin.key"
        )

    def client(self) -> Client:
        return Client(self.credentials())

    def save(self) -> None:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["kubeconfig"] = str(self.kubeconfig)
        data["processes"] = [{**asdict(p), "log": str(p.log)} for p in self.processes]
        temporary = self.layout.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.replace(self.layout.state_file)

    @classmethod
    def load(cls, state_dir: Path) -> Sandbox | None:
        path = Layout(state_dir).state_file
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        data["state_dir"] = Path(data["state_dir"])
        data["kubeconfig"] = Path(data["kubeconfig"])
        data["processes"] = [Process(**{**p, "log": Path(p["log"])}) for p in data["processes"]]
        return cls(**data)

    def running(self) -> list[Process]:
        return [p for p in self.processes if processes.is_running(p)]

    def healthy(self) -> bool:
        """Every process runs and the API server says it is ready."""
        every = len(self.running()) == len(self.processes) > 0
        return every and self.client().healthy()

    def rss_kib(self) -> int:
        return sum(processes.rss_kib(p.pid) for p in self.running())
