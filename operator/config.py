"""The operator's settings, gathered from ``voicefleet operator run`` into one object.

Pure data; the handlers read it from kopf's ``memo``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from voicefleet.catalog import Catalog, builtin
from voicefleet.operator.builders import PodSettings
from voicefleet.operator.interruption import SignalConfig

DEFAULT_OPERATOR_NAMESPACE: Final = "voicefleet-system"


@dataclass(frozen=True)
class OperatorConfig:
    # Namespaces whose pools are reconciled; empty with all_namespaces for every namespace.
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    # Where the token key Secret lives (the operator's own namespace).
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    signals: SignalConfig = field(default_factory=SignalConfig)
    pods: PodSettings = field(default_factory=PodSettings)
    # Spot pods unschedulable this long get on-demand stand-ins.
    spot_fallback_seconds: float = 120.0
    # Runtime status poll and drain progress, per pool.
    poll_interval_seconds: float = 2.0
    runtime_timeout_seconds: float = 1.0
    runtime_port: int = 8998
    # A pod not ready this long after its creation makes the pool Degraded/PodsNotReady.
    not_ready_timeout_seconds: float = 600.0
    # The GPU, model and price tables every plan reads (--gpu-catalog and --prices laid
    # over the built-in ones, once at start-up).
    catalog: Catalog = field(default_factory=builtin)

    def watches(self, namespace: str) -> bool:
        return self.all_namespaces or not self.namespaces or namespace in self.namespaces
