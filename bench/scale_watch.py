"""The operator benchmark's view of the pool pods: one watch over every namespace, each
pod as its last event showed it, and how long a condition on them took to hold."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client, watch

from voicefleet import constants
from voicefleet.testing import polling


@dataclass
class PodSeen:
    pool: str
    node: str | None
    draining: bool
    deleting: bool


@dataclass
class PodWatch:
    """Every pool pod as the last watch event showed it, plus when each pool first had
    ``n`` pods."""

    pods: dict[tuple[str, str], PodSeen] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, core: client.CoreV1Api) -> None:
        try:
            self._watch(core)
        except Exception:
            # The sandbox going down at the end cuts the stream; anything before is real.
            if not self.stop.is_set():
                raise

    def _watch(self, core: client.CoreV1Api) -> None:
        while not self.stop.is_set():
            stream = watch.Watch().stream(
                core.list_pod_for_all_namespaces,
                label_selector=constants.LABEL_POOL,
                timeout_seconds=30,
            )
            for event in stream:
                pod = event["object"]
                key = (pod.metadata.namespace, pod.metadata.name)
                with self.lock:
                    if event["type"] == "DELETED":
                        self.pods.pop(key, None)
                    else:
                        annotations = pod.metadata.annotations or {}
                        self.pods[key] = PodSeen(
                            pool=pod.metadata.labels[constants.LABEL_POOL],
                            node=pod.spec.node_name,
                            draining=constants.ANNOTATION_DRAINING in annotations,
                            deleting=pod.metadata.deletion_timestamp is not None,
                        )
                if self.stop.is_set():
                    return

    def snapshot(self) -> dict[tuple[str, str], PodSeen]:
        with self.lock:
            return dict(self.pods)

    def live(self, namespace: str, pool: str) -> int:
        return sum(
            1
            for (ns, _name), p in self.snapshot().items()
            if ns == namespace and p.pool == pool and not p.draining and not p.deleting
        )


def timed(predicate: Callable[[], bool], timeout: float, step: float = 0.005) -> float:
    took = polling.seconds_until(predicate, timeout, step)
    return float("nan") if took is None else took
