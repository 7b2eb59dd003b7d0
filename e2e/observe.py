"""Watching a chaos run from outside: the pool pods and the pools as the API server shows
them, on watches of its own (never the operator's metrics or logs).

Every event updates one picture of the namespace (:class:`Monitor`), and each open
:class:`Window` (one per scenario) takes a sample of its pool after every event: the serving
capacity is a step function that changes only at events, so sampling on events sees every
dip a 10 Hz poll would, and the briefest ones too.

A watch that breaks (an API server outage) lists again when it can and turns the difference
into events, stamped with the time of that list: nothing changed unseen, only late.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from voicefleet import constants
from voicefleet.testing import kube_admin

log = logging.getLogger(__name__)

# A watch asks the server to end it after this long (it is then resumed from where it was);
# a read that hears nothing for longer than the second number is a broken connection.
WATCH_SECONDS: Final = 60
READ_TIMEOUT_SECONDS: Final = WATCH_SECONDS + 15
RETRY_SECONDS: Final = 0.5
HTTP_GONE: Final = 410
# More pods than the plan for up to this long is one reconcile pass at work, not a duplicate:
# a pass creates replacements while it marks or deletes what they replace (all at once, so
# the replacement is not queued behind the rest), and the watch may show either first.
TRANSIENT_SECONDS: Final = 5.0


@dataclass(frozen=True)
class PodSeen:
    """A pool pod as the API server last showed it."""

    uid: str
    name: str
    pool: str
    owner: str  # the owning pool's UID
    capacity_type: str
    phase: str
    node: str | None
    ip: str | None
    ready: bool
    draining: bool
    deleting: bool

    @property
    def running(self) -> bool:
        return self.phase == "Running" and bool(self.ip) and not self.deleting

    @property
    def serving(self) -> bool:
        """Takes callers: Ready, not marked draining, not being deleted."""
        return self.ready and not self.draining and not self.deleting

    @property
    def unscheduled(self) -> bool:
        return self.node is None and not self.deleting

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> PodSeen:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        status = body.get("status") or {}
        owners = [o.get("uid", "") for o in meta.get("ownerReferences") or []]
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        return cls(
            uid=str(meta.get("uid", "")),
            name=str(meta.get("name", "")),
            pool=str(labels.get(constants.LABEL_POOL, "")),
            owner=owners[0] if owners else "",
            capacity_type=str(labels.get(constants.LABEL_CAPACITY_TYPE, "")),
            phase=str(status.get("phase") or "Pending"),
            node=(body.get("spec") or {}).get("nodeName") or None,
            ip=status.get("podIP") or None,
            ready=ready,
            draining=constants.ANNOTATION_DRAINING in (meta.get("annotations") or {}),
            deleting=meta.get("deletionTimestamp") is not None,
        )


ListCall = Callable[..., Any]
Handler = Callable[[str, dict[str, Any], float], None]


class Watch:
    """List, then watch, one kind of object on a thread of its own; ``handler(type, body,
    time.monotonic())`` for every change, including those a broken watch missed."""

    def __init__(self, name: str, list_call: ListCall, handler: Handler) -> None:
        self.name = name
        self.list_call = list_call
        self.handler = handler
        self.known: dict[str, dict[str, Any]] = {}  # uid -> body
        self.synced = threading.Event()
        self.breaks = 0
        self._stop = threading.Event()
        self._response: Any = None  # the watch being read, closed to stop at once
        self._thread = threading.Thread(target=self._run, name=f"watch {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            response.close()  # the read in progress ends now, not at the watch's timeout
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._list()
                self.synced.set()
                for event in self._events(version):
                    if self._stop.is_set():
                        return
                    self._take(event["type"], event["object"])
            except Exception as exc:  # any break is mended by listing again
                if self._stop.is_set():
                    return
                self.breaks += 1
                log.debug("watch %s broke: %r", self.name, exc)
                # A pause before listing again (pacing, not a wait for anything): an API
                # server that is down refuses at once; stop() ends the pause.
                self._stop.wait(RETRY_SECONDS)

    def _list(self) -> str:
        response = self.list_call(_preload_content=False, _request_timeout=(5, 30))
        listing = json.loads(response.data)
        now = time.monotonic()
        seen = {item["metadata"]["uid"]: item for item in listing.get("items", [])}
        for uid in [u for u in self.known if u not in seen]:
            self.handler("DELETED", self.known.pop(uid), now)
        for uid, item in seen.items():
            before = self.known.get(uid)
            if before is None or before["metadata"].get("resourceVersion") != item["metadata"].get(
                "resourceVersion"
            ):
                self.known[uid] = item
                self.handler("ADDED" if before is None else "MODIFIED", item, now)
        return str(listing["metadata"]["resourceVersion"])

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        while not self._stop.is_set():
            response = self.list_call(
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
                _request_timeout=(5, READ_TIMEOUT_SECONDS),
            )
            self._response = response
            try:
                for line in iter_resp_lines(response):
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    body = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if body.get("code") == HTTP_GONE:
                            return  # too old: list again
                        raise RuntimeError(f"watch {self.name}: {body.get('message')}")
                    version = str((body.get("metadata") or {}).get("resourceVersion", version))
                    if event.get("type") != "BOOKMARK":
                        yield event
            finally:
                response.release_conn()

    def _take(self, kind: str, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        if kind == "DELETED":
            self.known.pop(uid, None)
        else:
            self.known[uid] = body
        self.handler(kind, body, time.monotonic())


@dataclass
class Limits:
    """What a scenario allows its pool, set (and changed) by the scenario as it goes.

    ``target``: the sessions the pool must serve; ``floor``: the least serving capacity that
    the nodes allow at the moment (the target, unless the scenario took nodes away);
    ``pods``/``spot``: the most non-draining pods (all, spot) that are not a duplicate: the
    plan, plus on-demand stand-ins for spot pods while the scenario allows them.
    """

    target: int
    floor: int
    pods: int
    spot: int


@dataclass
class Window:
    """Samples of one pool during one scenario."""

    pool: str
    per_pod: int
    limits: Limits
    opened: float = field(default_factory=time.monotonic)
    closed: float | None = None
    samples: int = 0
    capacity_min: int | None = None
    floor_at_min: int = 0
    margin_min: int | None = None  # least capacity - floor
    below_target_seconds: float = 0.0
    pods_max: int = 0
    pods_allowed: int = 0  # the most ``limits.pods`` was meanwhile
    spot_max: int = 0
    over_limit: list[str] = field(default_factory=list)  # excesses that lasted
    over_seconds_max: float = 0.0  # the longest excess, transient ones too
    _over: tuple[float, str] | None = None  # since when, and what, while over the limits
    drained: set[str] = field(default_factory=set)  # uids first marked draining meanwhile
    created: set[str] = field(default_factory=set)  # uids of pods first seen meanwhile
    _last: tuple[float, int] | None = None  # (time, capacity) of the previous sample

    def sample(self, pods: list[PodSeen], now: float) -> None:
        live = [p for p in pods if not p.deleting]
        staying = [p for p in live if not p.draining]
        spot = sum(1 for p in staying if p.capacity_type == constants.CapacityType.SPOT)
        capacity = self.per_pod * sum(1 for p in live if p.serving)
        if self._last is not None and self._last[1] < self.limits.target:
            self.below_target_seconds += now - self._last[0]
        self._last = (now, capacity)
        self.samples += 1
        margin = capacity - self.limits.floor
        if self.margin_min is None or margin < self.margin_min:
            self.margin_min = margin
            self.capacity_min = capacity
            self.floor_at_min = self.limits.floor
        self.pods_max = max(self.pods_max, len(staying))
        self.pods_allowed = max(self.pods_allowed, self.limits.pods)
        self.spot_max = max(self.spot_max, spot)
        if len(staying) > self.limits.pods or spot > self.limits.spot:
            if self._over is None:
                what = (
                    f"{len(staying)} pods ({spot} spot) from +{now - self.opened:.1f} s, "
                    f"allowed {self.limits.pods} ({self.limits.spot} spot): "
                    + ", ".join(sorted(p.name for p in staying))
                )
                self._over = (now, what)
        else:
            self._end_excess(now)

    def close(self, now: float) -> None:
        if self._last is not None and self._last[1] < self.limits.target:
            self.below_target_seconds += now - self._last[0]
        self._last = None
        self._end_excess(now)
        self.closed = now

    def _end_excess(self, now: float) -> None:
        if self._over is None:
            return
        lasted = now - self._over[0]
        self.over_seconds_max = max(self.over_seconds_max, lasted)
        if lasted > TRANSIENT_SECONDS:
            self.over_limit.append(f"{self._over[1]}, for {lasted:.1f} s")
        self._over = None


class Monitor:
    """The namespace's pool pods and pools, from watches; windows sampled at every change;
    ``listeners`` hear every pod change (the stand-in runtimes follow the pods that way)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.lock = threading.RLock()
        self.pods: dict[str, PodSeen] = {}
        self.pools: dict[str, dict[str, Any]] = {}  # uid -> body
        self.windows: list[Window] = []
        self.listeners: list[Callable[[PodSeen, bool], None]] = []
        # When each pod was first seen, first marked draining, and deleted or gone.
        self.first_seen: dict[str, float] = {}
        self.drain_marked: dict[str, float] = {}
        self.terminating: dict[str, float] = {}
        self.names: dict[str, PodSeen] = {}  # uid -> the pod as last seen, gone ones too
        self.pool_gone: dict[str, float] = {}  # pool uid -> when the watch saw it go
        core = client.CoreV1Api(api)
        objects = client.CustomObjectsApi(api)
        selector = kube_admin.RUNTIME_PODS

        def list_pods(**kwargs: Any) -> Any:
            return core.list_namespaced_pod(namespace, label_selector=selector, **kwargs)

        def list_pools(**kwargs: Any) -> Any:
            return objects.list_namespaced_custom_object(
                constants.GROUP, constants.VERSION, namespace, constants.PLURAL, **kwargs
            )

        self.watches = [
            Watch("pods", list_pods, self._pod_event),
            Watch("pools", list_pools, self._pool_event),
        ]

    def start(self, timeout: float = 30) -> None:
        for watch in self.watches:
            watch.start()
        for watch in self.watches:
            if not watch.synced.wait(timeout):
                raise TimeoutError(f"the {watch.name} watch did not list within {timeout:.0f} s")

    def stop(self) -> None:
        for watch in self.watches:
            watch.stop()

    # --- windows -------------------------------------------------------------------------

    def open(self, pool: str, per_pod: int, limits: Limits) -> Window:
        with self.lock:
            window = Window(pool, per_pod, limits)
            self.windows.append(window)
            window.sample(self.pool_pods(pool), window.opened)
            return window

    def set_limits(self, window: Window, limits: Limits) -> None:
        """New limits from now on (the sample before them is kept as it was)."""
        with self.lock:
            now = time.monotonic()
            window.sample(self.pool_pods(window.pool), now)
            window.limits = limits
            window.sample(self.pool_pods(window.pool), now)

    def close(self, window: Window) -> Window:
        with self.lock:
            window.close(time.monotonic())
            self.windows.remove(window)
            return window

    # --- reading -------------------------------------------------------------------------

    def pool_pods(self, pool: str) -> list[PodSeen]:
        with self.lock:
            return sorted((p for p in self.pods.values() if p.pool == pool), key=lambda p: p.name)

    def pool_names(self) -> set[str]:
        with self.lock:
            return {str(b["metadata"]["name"]) for b in self.pools.values()}

    # --- events --------------------------------------------------------------------------

    def _pod_event(self, kind: str, body: dict[str, Any], now: float) -> None:
        pod = PodSeen.from_body(body)
        with self.lock:
            gone = kind == "DELETED"
            if gone:
                self.pods.pop(pod.uid, None)
            else:
                self.pods[pod.uid] = pod
            self.names[pod.uid] = pod
            if pod.uid not in self.first_seen:
                self.first_seen[pod.uid] = now
                for window in self.windows:
                    if window.pool == pod.pool:
                        window.created.add(pod.uid)
            if pod.draining and pod.uid not in self.drain_marked:
                self.drain_marked[pod.uid] = now
                for window in self.windows:
                    if window.pool == pod.pool:
                        window.drained.add(pod.uid)
            if (gone or pod.deleting) and pod.uid not in self.terminating:
                self.terminating[pod.uid] = now
            for window in self.windows:
                if window.pool == pod.pool:
                    window.sample(self.pool_pods(pod.pool), now)
        # Outside the lock: a listener may call the API; this thread alone calls them, in
        # the order of the events.
        for listener in self.listeners:
            listener(pod, gone)

    def _pool_event(self, kind: str, body: dict[str, Any], now: float) -> None:
        uid = body["metadata"]["uid"]
        with self.lock:
            if kind == "DELETED":
                self.pools.pop(uid, None)
                self.pool_gone.setdefault(uid, now)
            else:
                self.pools[uid] = body
