"""The operator's Prometheus metrics, all named ``voicefleet_operator_*``.

Defined once here; the modules that observe them import this one. Served by
``voicefleet operator run --metrics-port``.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from voicefleet.constants import OPERATOR_METRIC_PREFIX as P

# Sub-second buckets: the interruption reaction target is 1 s, the reconcile target 2 s.
FAST_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

POOLS = Gauge(f"{P}pools", "VoiceAgentPools the operator reconciles.")
PODS = Gauge(
    f"{P}pods",
    "Runtime pods by pool and state (serving, starting, draining).",
    ["namespace", "pool", "state"],
)
POOL_REPLICAS = Gauge(
    f"{P}pool_replicas",
    "Runtime pods of a pool by capacity type (spot, on-demand).",
    ["namespace", "pool", "capacity"],
)
POOL_COST_PER_SESSION_HOUR = Gauge(
    f"{P}pool_cost_per_session_hour",
    "The plan's price of a pool per hour divided by its session target.",
    ["namespace", "pool"],
)
RECONCILE_SECONDS = Histogram(
    f"{P}reconcile_duration_seconds",
    "Time of one reconcile of one pool.",
    ["trigger"],
    buckets=FAST_BUCKETS,
)
RECONCILE_ERRORS = Counter(f"{P}reconcile_errors_total", "Reconciles that raised.", ["trigger"])
INTERRUPTION_SECONDS = Histogram(
    f"{P}interruption_reaction_seconds",
    "From seeing a node signal to drain calls made and replacements created.",
    buckets=FAST_BUCKETS,
)
NODES_NOT_READY = Gauge(
    f"{P}nodes_not_ready", "Nodes NotReady now, as the operator sees them (interrupted or not)."
)
MASS_NOT_READY = Gauge(
    f"{P}mass_not_ready",
    "1 while so many nodes are NotReady at once that NotReady drains nothing.",
)
INTERRUPTIONS = Counter(f"{P}node_interruptions_total", "Node signals seen, by kind.", ["kind"])
RUNTIME_POLL_FAILURES = Counter(
    f"{P}runtime_poll_failures_total", "GET /v1/status calls that failed or timed out."
)
DRAIN_CALLS = Counter(f"{P}drain_calls_total", "POST /v1/drain calls, by result.", ["result"])
POD_CREATES = Counter(f"{P}pod_creates_total", "Pods created, by capacity type.", ["capacity"])
POD_DELETES = Counter(f"{P}pod_deletes_total", "Pods deleted, by reason.", ["reason"])
API_WRITES = Counter(
    f"{P}api_writes_total",
    "Write calls to the Kubernetes API made by the reconcile (not kopf's own).",
    ["verb", "kind", "namespace"],
)
API_RETRIES = Counter(
    f"{P}api_retries_total", "Kubernetes API calls asked again after a 429 or 5xx.", ["status"]
)
API_SECONDS = Histogram(
    f"{P}api_request_duration_seconds",
    "Kubernetes API calls.",
    ["verb"],
    buckets=FAST_BUCKETS,
)
LEADER = Gauge(
    f"{P}leader",
    "1 while this replica holds the leader Lease and runs the reconciles, 0 on standby.",
)
GATEWAY_PUSHES = Counter(
    f"{P}gateway_pushes_total",
    "Backend sets sent to gateway replicas, by outcome (ok, refused, error).",
    ["outcome"],
)
