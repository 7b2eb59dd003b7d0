"""The gateway's Prometheus metrics, in a registry of their own (prefix voicefleet_gateway_)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from voicefleet import constants

P = constants.GATEWAY_METRIC_PREFIX
# 20 us to 50 ms: a relayed message normally spends tens of microseconds in the gateway;
# the goal is a p95 under 1 ms, and anything past 20 ms is an audible hiccup.
RELAY_BUCKETS = (
    0.00002, 0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002,
    0.003, 0.005, 0.01, 0.02, 0.05,
)  # fmt: skip
# From admitted at once to past the default wait (30 s).
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)

# Directions of a relayed message (the label of relay_latency_seconds).
UP = "up"  # caller -> pod
DOWN = "down"  # pod -> caller


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.relayed = Counter(
            f"{P}conversations_relayed", "Conversations admitted to a backend.", ["backend"],
            registry=r,
        )  # fmt: skip
        self.active = Gauge(
            f"{P}conversations_active", "Conversations relayed now.", ["backend"], registry=r
        )
        self.ended = Counter(
            f"{P}conversations_ended", "Relayed conversations ended, by who ended them.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.queue_length = Gauge(f"{P}queue_length", "Callers waiting for a slot.", registry=r)
        self.queue_wait = Histogram(
            f"{P}queue_wait_seconds",
            "How long an admitted caller waited (0 for one admitted at once).",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            f"{P}refusals", "Callers the gateway refused or gave up on, by reason.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.backend_refusals = Counter(
            f"{P}backend_refusals",
            "Upgrades a backend refused (the caller was offered to the next one).",
            ["backend", "reason"],
            registry=r,
        )
        self.backends_in_rotation = Gauge(
            f"{P}backends_in_rotation", "Backends that answered their last poll.", registry=r
        )
        self.relay_latency = Histogram(
            f"{P}relay_latency_seconds",
            "Time a message spends in the gateway: read from one side to written to the other.",
            ["direction"],
            buckets=RELAY_BUCKETS,
            registry=r,
        )
        self.moved = Counter(
            f"{P}conversations_moved", "Conversations moved to another pod as theirs drained.",
            registry=r,
        )  # fmt: skip
        self.cut = Counter(
            f"{P}conversations_cut",
            "Conversations the platform ended (not the caller, not the session cap), by reason.",
            ["reason"],
            registry=r,
        )
        self.move_failures = Counter(
            f"{P}move_failures",
            "Moves that did not happen (the conversation stayed, its caller told of the drain).",
            ["reason"],
            registry=r,
        )
        self.move_seconds = Histogram(
            f"{P}move_seconds", "From a pod's drain notice to the conversation on another pod.",
            buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.switch_seconds = Histogram(
            f"{P}move_switch_seconds",
            "The part of a move during which the caller's audio was held.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.relay_stalls = Counter(
            f"{P}relay_stalls", "Conversations aborted because one side stopped reading.",
            registry=r,
        )  # fmt: skip
        self.connections_timed_out = Counter(
            f"{P}connections_timed_out",
            "Connections closed for not sending a whole request in time (slowloris).",
            registry=r,
        )
        self.bad_requests = Counter(
            f"{P}bad_requests", "Requests that could not be parsed (answered 400).", registry=r
        )
        self.draining = Gauge(f"{P}draining", "1 once SIGTERM was received.", registry=r)
