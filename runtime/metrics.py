"""The runtime's Prometheus metrics, in a registry of their own (prefix voicefleet_runtime_)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from voicefleet import constants
from voicefleet.runtime.gpu import GpuMemory

P = constants.RUNTIME_METRIC_PREFIX
# 5 ms to 160 ms: from a lightly loaded H100 step to twice the real-time budget.
STEP_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.12, 0.16)
TTFA_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
# From a caller on the same network (a few ms) to the default lag bound (3 s) and past it.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0)


class _GpuCollector(Collector):
    """GPU memory read from NVML at scrape time; yields nothing on a machine without a GPU."""

    def __init__(self, read: Callable[[], GpuMemory | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        memory = self._read()
        if memory is None:
            return
        yield GaugeMetricFamily(
            f"{P}gpu_memory_used_bytes", "GPU memory in use.", value=memory.used
        )
        yield GaugeMetricFamily(
            f"{P}gpu_memory_total_bytes", "GPU memory in all.", value=memory.total
        )


class RuntimeMetrics:
    def __init__(self, read_gpu: Callable[[], GpuMemory | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_active = Gauge(f"{P}sessions_active", "Live sessions.", registry=r)
        self.sessions_capacity = Gauge(f"{P}sessions_capacity", "Session slots.", registry=r)
        self.sessions_started = Counter(
            f"{P}sessions_started", "Sessions accepted.", ["protocol"], registry=r
        )
        self.sessions_refused = Counter(
            f"{P}sessions_refused", "Sessions refused before the upgrade.", ["reason"], registry=r
        )
        self.sessions_ended = Counter(
            f"{P}sessions_ended", "Sessions ended, by reason.", ["reason"], registry=r
        )
        self.frame_step = Histogram(
            f"{P}frame_step_seconds",
            "Duration of one batched step (encode, LM, decode) for all slots.",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.late_frames = Counter(
            f"{P}late_frames", "Steps that finished after their 80 ms slot.", registry=r
        )
        self.time_to_first_audio = Histogram(
            f"{P}time_to_first_audio_seconds",
            "From session start to the first audio sent back.",
            buckets=TTFA_BUCKETS,
            registry=r,
        )
        self.queue_drops = Counter(
            f"{P}queue_drops",
            "Frames dropped from a session's full queue (a slow or bursty client).",
            ["direction"],
            registry=r,
        )
        self.input_dropped = Counter(
            f"{P}input_dropped",
            "Client messages dropped unprocessed: over the session's input budget (rate), "
            "with too many waiting for the codec (backlog), or quiet frames skipped while "
            "input waited in a burst (catch_up).",
            ["reason"],
            registry=r,
        )
        self.client_lag = Histogram(
            f"{P}client_lag_seconds",
            "How far behind callers read: the round trip of a ping queued behind their audio.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.transport_aborts = Counter(
            f"{P}transport_aborts",
            "Connections aborted because a server-side close could not be sent in time.",
            registry=r,
        )
        self.upgrades_aborted = Counter(
            f"{P}upgrades_aborted",
            "WebSocket upgrades the caller abandoned (hung up or reset) before its session began.",
            registry=r,
        )
        self.connections_timed_out = Counter(
            f"{P}connections_timed_out",
            "Connections closed for not sending a whole request line and headers in time.",
            registry=r,
        )
        self.bad_requests = Counter(
            f"{P}bad_requests",
            "HTTP requests that could not be parsed (answered 400, not logged).",
            registry=r,
        )
        self.codec_worker_restarts = Counter(
            f"{P}codec_worker_restarts",
            "Codec worker processes replaced after exiting or not answering.",
            registry=r,
        )
        self.model_load_seconds = Gauge(
            f"{P}model_load_seconds", "Time to load the model and warm it up.", registry=r
        )
        self.draining = Gauge(f"{P}draining", "1 while draining.", registry=r)
        r.register(_GpuCollector(read_gpu))

    def record_step(self, seconds: float, late: bool) -> None:
        self.frame_step.observe(seconds)
        if late:
            self.late_frames.inc()
