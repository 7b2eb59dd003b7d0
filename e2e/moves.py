"""The moving drill: live conversations through the pool's gateway, their pods' nodes
interrupted one after another, every conversation moved (with its context) to another pod
while its caller's socket stays open. Measured from the callers' side (socket closes,
notices, the longest gap between audio messages per conversation) and from the pool's
status (conversations moved and cut, as its gateways count them).

The gateway's Deployment runs on kwok's fake nodes, so its replicas run here, one real
``voicefleet gateway`` per gateway pod, bound to that pod's IP with the Deployment's own
arguments and the pool's token, as the kubelet would start them; the operator tells them
the pool's pods (``PUT /v1/backends``), real tiny-model runtimes stand in for the pods.

No pytest here: ``e2e/test_fleet.py`` asserts on what these steps return.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client

from e2e.drill import table
from e2e.fleet import Cluster, FleetError, Runtimes, _http_ok, serving_pods
from voicefleet import constants
from voicefleet.testing import kube_admin
from voicefleet.testing.loopback import http
from voicefleet.testing.polling import poll, wait_for

PCM_RATE = 16_000
NOTICE_TEXT = "text"  # /ws/pcm's text messages: the agent's words
CALLERS_ANSWER_SECONDS = 30.0
# Slots long enough for the whole drill (about 30 s; a session cap ending a conversation would
# close its socket), and no longer: the tiny model attends over the whole cache every step.
SESSION_SECONDS = 60
QUIET_SECONDS = 3.0  # the window before each signal the baseline gaps come from
FRAME_BYTES = 2 * 1280  # 80 ms of 16 kHz PCM16
FRAME_SECONDS = 0.08


# --- the gateway's replicas, standing in for its pods ------------------------------------------
@dataclass
class Gateways:
    """``voicefleet gateway`` processes bound to the gateway pods' IPs."""

    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, pod: client.V1Pod, deployment: client.V1Deployment, token: str) -> None:
        ip = pod.status.pod_ip
        if not ip or not ip.startswith("127."):
            raise FleetError(f"pod {pod.metadata.name} has no loopback IP ({ip}): not a sandbox?")
        (container,) = deployment.spec.template.spec.containers
        # The Deployment's command and arguments, but bound to the pod's own address.
        args = [a for a in container.args if not a.startswith("--host=")] + [f"--host={ip}"]
        if container.command[0] != "voicefleet":
            raise FleetError(f"the gateway's command is not voicefleet's: {container.command}")
        # `python -m voicefleet ...`: the console script, run by this environment's Python.
        command = [sys.executable, "-m", *container.command, *args]
        log = (self.log_dir / f"gateway-{pod.metadata.name}.log").open("wb")
        env = {**os.environ, constants.ENV_POOL_TOKEN: token}
        self.processes[ip] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env
        )

    def wait_up(self, timeout: float = 60) -> None:
        for ip, process in self.processes.items():

            def up(ip: str = ip, process: subprocess.Popen[bytes] = process) -> bool:
                if process.poll() is not None:
                    raise FleetError(f"the gateway on {ip} exited ({process.returncode})")
                return _http_ok(f"http://{ip}:{constants.RUNTIME_PORT}{constants.PATH_HEALTHZ}")

            wait_for(up, timeout, f"the gateway on {ip}")

    def status(self, ip: str) -> dict[str, Any]:
        return _json(f"http://{ip}:{constants.RUNTIME_PORT}{constants.PATH_STATUS}")

    def in_rotation(self, ip: str) -> set[str]:
        return {b["url"] for b in self.status(ip)["backends"] if b["inRotation"]}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()


# --- the callers ---------------------------------------------------------------------------------
@dataclass
class Conversation:
    gateway: str
    audio: list[float] = field(default_factory=list)  # time.monotonic() of each audio message
    notices: list[str] = field(default_factory=list)  # their "type"s (session, drain, ...)
    closed: int | None = None  # the close code, once the socket closed

    def longest_gap(self, since: float, until: float) -> float:
        times = [since, *(t for t in self.audio if since < t < until), until]
        return max(b - a for a, b in itertools.pairwise(times))


class Callers:
    """Live PCM conversations through the gateway, in a process of their own: the drill's
    Kubernetes calls (deserialising pod lists holds this process's GIL for tens of
    milliseconds) must never delay the loop whose arrival times are measured. CLOCK_MONOTONIC
    is the machine's, so the child's times compare with this process's."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_run_callers, args=(child,), daemon=True)
        self._process.start()

    def call(self, gateway_ip: str) -> None:
        self._ask(("call", gateway_ip))

    @property
    def conversations(self) -> list[Conversation]:
        """What each caller has seen so far."""
        return [Conversation(**seen) for seen in self._ask(("report", ""))]

    def _ask(self, command: tuple[str, str]) -> Any:
        self._conn.send(command)
        if not self._conn.poll(CALLERS_ANSWER_SECONDS):
            raise FleetError(f"the callers' process did not answer {command[0]!r}")
        return self._conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("stop", ""))
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()


def _run_callers(conn: Connection) -> None:
    asyncio.run(_callers(conn))


async def _callers(conn: Connection) -> None:
    """The child: take commands from the pipe; each call is a conversation until stopped."""
    loop = asyncio.get_running_loop()
    conversations: list[Conversation] = []
    tasks: list[asyncio.Task[None]] = []
    while True:
        command, argument = await loop.run_in_executor(None, conn.recv)
        if command == "call":
            conversation = Conversation(argument)
            conversations.append(conversation)
            tasks.append(asyncio.create_task(_converse(conversation)))
            conn.send(None)
        elif command == "report":
            conn.send([asdict(c) for c in conversations])
        else:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return


async def _converse(conversation: Conversation) -> None:
    url = (
        f"ws://{conversation.gateway}:{constants.RUNTIME_PORT}{constants.PATH_PCM}?rate={PCM_RATE}"
    )
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        sender = asyncio.create_task(_speak(ws))
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    conversation.audio.append(time.monotonic())
                elif message.type == aiohttp.WSMsgType.TEXT:
                    kind = json.loads(message.data).get("type")
                    if kind != NOTICE_TEXT:  # the agent's words are content, not notices
                        conversation.notices.append(str(kind))
        finally:
            conversation.closed = ws.close_code
            sender.cancel()


async def _speak(ws: aiohttp.ClientWebSocketResponse) -> None:
    started = time.monotonic()
    sent = 0
    while not ws.closed:
        await ws.send_bytes(bytes(FRAME_BYTES))
        sent += 1
        # Paced by the clock, as a live caller speaks: a late wake-up does not slow it.
        await asyncio.sleep(max(0.0, started + sent * FRAME_SECONDS - time.monotonic()))


# --- the stage: gateways, runtimes, live conversations --------------------------------------------
def stage(  # noqa: PLR0917
    cluster: Cluster,
    namespace: str,
    pool: str,
    runtimes: Runtimes,
    gateways: Gateways,
    callers: Callers,
    count: int,
    log: Callable[[str], None],
) -> list[tuple[str, client.V1Pod]]:
    """The gateway's replicas up; ``count`` conversations through them, on the pods of two
    spot nodes (stand-ins of ``count / 2`` slots each); then an on-demand pod with room for
    them all, where they can move. Returns the two (node, pod) to interrupt."""
    deployment = client.AppsV1Api(cluster.api).read_namespaced_deployment(
        f"{pool}{constants.SUFFIX_GATEWAY}", namespace
    )
    replicas = int(deployment.spec.replicas)
    found = wait_for(
        lambda: (
            (pods := kube_admin.gateway_pods(cluster.api, namespace, pool))
            and len(pods) == replicas
            and all(p.status.pod_ip for p in pods)
            and pods
        ),
        60,
        "the gateway's replicas running",
    )
    token = kube_admin.pool_token(cluster.api, namespace, pool)
    for pod in found:
        gateways.start(pod, deployment, token)
    gateways.wait_up()
    log("gateways up")

    pods = serving_pods(cluster, namespace, pool)
    spot: dict[str, client.V1Pod] = {}
    for pod in pods:
        if pod.metadata.labels[constants.LABEL_CAPACITY_TYPE] == constants.CapacityType.SPOT:
            spot.setdefault(pod.spec.node_name, pod)
    chosen = sorted(spot.items())[:2]
    (target, *_) = [
        p
        for p in pods
        if p.metadata.labels[constants.LABEL_CAPACITY_TYPE] == constants.CapacityType.ON_DEMAND
    ]
    for _, pod in chosen:
        runtimes.start(pod, token, slots=count // len(chosen), session_seconds=SESSION_SECONDS)
    runtimes.wait_serving()
    _in_rotation(gateways, [pod for _, pod in chosen])
    log("runtimes in the gateways' rotation")

    ips = sorted(gateways.processes)
    for index in range(count):
        callers.call(ips[index % len(ips)])
    wait_for(
        lambda: all(len(c.audio) >= 10 for c in callers.conversations),
        60,
        "every conversation hearing audio",
    )
    log("conversations live")
    # Only now the pod they move to: a new conversation goes to the pod with the most room.
    runtimes.start(target, token, slots=count, session_seconds=SESSION_SECONDS)
    runtimes.wait_serving(only=[target.status.pod_ip])  # the others are full: unready
    _in_rotation(gateways, [target])
    log("the pod to move to in rotation")

    def seen() -> bool:
        status = kube_admin.get_pool(cluster.api, namespace, pool)["status"]
        return int(status["sessions"]["active"]) >= count

    # The operator drains a pod with live sessions and deletes an empty one at once.
    wait_for(seen, 60, "the operator to see the live conversations")
    log("the operator sees them")
    lost = [(c.closed, c.notices) for c in callers.conversations if c.closed is not None]
    if lost:
        raise FleetError(f"conversations ended before the drill: {lost}")
    return chosen


def _in_rotation(gateways: Gateways, pods: Sequence[client.V1Pod]) -> None:
    urls = {f"http://{pod.status.pod_ip}:{constants.RUNTIME_PORT}" for pod in pods}
    wait_for(
        lambda: all(urls <= gateways.in_rotation(ip) for ip in gateways.processes),
        60,
        "the gateways to have the runtime pods from the operator",
    )


# --- one interrupted node ----------------------------------------------------------------------
@dataclass(frozen=True)
class MoveStep:
    node: str
    signal: str
    conversations: int  # on the node's pod when the signal came
    moved: int  # the pool's status: its gateways' moves, during this step
    cut: dict[str, int]
    sockets_closed: int  # callers whose socket closed meanwhile (of all of them)
    gaps_ms: tuple[float, ...]  # each of its conversations' longest audio gap
    # Every conversation's longest gap in the seconds before the signal: what this machine
    # gives without a move (the baseline beside the gaps).
    quiet_gaps_ms: tuple[float, ...]
    emptied_seconds: float  # signal -> the node's pod held no conversation
    min_capacity: int
    target: int


def _runtime_active(ip: str) -> int:
    url = f"http://{ip}:{constants.RUNTIME_PORT}{constants.PATH_STATUS}"
    return int(_json(url)["sessions"]["active"])


def _json(url: str) -> dict[str, Any]:
    """A pod's JSON answer (a runtime's or a gateway's ``/v1/status``)."""
    status, _, body = http("GET", url)
    if status != 200:
        raise FleetError(f"{url}: HTTP {status} {body[:200]!r}")
    answer: dict[str, Any] = json.loads(body)
    return answer


def _gateway_counts(cluster: Cluster, namespace: str, pool: str) -> tuple[int, dict[str, int]]:
    status = kube_admin.get_pool(cluster.api, namespace, pool).get("status") or {}
    gateway = status.get("gateway") or {}
    return int(gateway.get("moved", 0)), dict(gateway.get("cut") or {})


def interrupt_node(
    cluster: Cluster,
    namespace: str,
    pool: str,
    *,
    node: str,
    signal: tuple[str, dict[str, Any]],
    pod_ip: str,
    callers: Callers,
    timeout: float = 60,
) -> MoveStep:
    """Signal ``node``; wait until its pod (at ``pod_ip``) holds no conversation and the
    pool's status counted the moves. The gaps: the longest silence of each conversation from
    the signal to a second after the pod emptied, the worst ones, as many as were on the pod
    (the callers cannot tell which were; a conversation elsewhere counts if it was worse)."""
    status = kube_admin.get_pool(cluster.api, namespace, pool)
    per_pod = int(status["status"]["plan"]["sessionsPerPod"])
    target = int(status["spec"]["sessions"]["target"])
    on_it = _runtime_active(pod_ip)
    if on_it == 0:
        raise FleetError(f"{node}: its pod {pod_ip} holds no conversation to move")
    moved_before, cut_before = _gateway_counts(cluster, namespace, pool)
    closed_before = sum(1 for c in callers.conversations if c.closed is not None)
    min_capacity = len(serving_pods(cluster, namespace, pool)) * per_pod

    started = time.monotonic()
    quiet = tuple(
        c.longest_gap(started - QUIET_SECONDS, started) * 1000 for c in callers.conversations
    )
    client.CoreV1Api(cluster.api).patch_node(node, signal[1])
    emptied: float | None = None

    def done() -> bool:
        nonlocal min_capacity, emptied
        min_capacity = min(min_capacity, len(serving_pods(cluster, namespace, pool)) * per_pod)
        if emptied is None and _runtime_active(pod_ip) == 0:
            emptied = time.monotonic()
        moved, _ = _gateway_counts(cluster, namespace, pool)
        return emptied is not None and moved - moved_before >= on_it

    poll(done, timeout, 0.25)
    if emptied is None:
        raise FleetError(f"{node}: its pod still holds conversations after {timeout:.0f} s")
    # A second of audio after the move, so a gap that ends only after it is seen whole.
    time.sleep(1.0)
    until = time.monotonic()
    moved, cut = _gateway_counts(cluster, namespace, pool)
    gaps = sorted(
        (c.longest_gap(started, until) * 1000 for c in callers.conversations), reverse=True
    )
    return MoveStep(
        node=node,
        signal=signal[0],
        conversations=on_it,
        moved=moved - moved_before,
        cut={k: v - cut_before.get(k, 0) for k, v in cut.items() if v > cut_before.get(k, 0)},
        sockets_closed=sum(1 for c in callers.conversations if c.closed is not None)
        - closed_before,
        gaps_ms=tuple(gaps[:on_it]),
        quiet_gaps_ms=quiet,
        emptied_seconds=emptied - started,
        min_capacity=min_capacity,
        target=target,
    )


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def moves_table(steps: Sequence[MoveStep]) -> str:
    """Beside the interruption drill's table: what happened to the live conversations."""
    header = (
        "NODE",
        "SIGNAL",
        "CONVERSATIONS",
        "MOVED",
        "CUT",
        "SOCKETS CLOSED",
        "EMPTIED",
        "LONGEST GAP p50/p95/max",
        "BEFORE IT, p95",
        "MIN CAPACITY / TARGET",
    )
    rows = [header] + [
        (
            s.node,
            s.signal,
            str(s.conversations),
            str(s.moved),
            str(sum(s.cut.values())),
            str(s.sockets_closed),
            f"{s.emptied_seconds * 1000:.0f} ms",
            (f"{statistics.median(s.gaps_ms):.0f} / {p95(s.gaps_ms):.0f} / {max(s.gaps_ms):.0f} ms")
            if s.gaps_ms
            else "-",
            f"{p95(s.quiet_gaps_ms):.0f} ms",
            f"{s.min_capacity} / {s.target}",
        )
        for s in steps
    ]
    return table(rows)
