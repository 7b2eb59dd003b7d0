"""The gateway's pure decisions, without processes: which backend a conversation is offered
to first, which close codes may be passed on, which flags are refused, and what a DNS name
of backends resolves to."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WSMsgType

from voicefleet import constants
from voicefleet.cli import main
from voicefleet.gateway.backends import Backend, BackendPool
from voicefleet.gateway.cuts import (
    CUT_GATEWAY_SHUTDOWN,
    CUT_POD_DRAINED,
    CUT_POD_ERROR,
    CUT_POD_LOST,
    cut_reason,
)
from voicefleet.gateway.discovery import DnsBackends, backend_url
from voicefleet.gateway.metrics import GatewayMetrics
from voicefleet.gateway.relay import (
    ENDED_BACKEND_LOST,
    ENDED_BY_BACKEND,
    ENDED_BY_CALLER,
    ENDED_SHUTDOWN,
    ENDED_STALLED,
    Relay,
)
from voicefleet.gateway.upstream import Upstream
from voicefleet.gateway.wire import sendable


def _backend(
    url: str, *, capacity: int, active: int, draining: bool = False, in_rotation: bool = True,
    loaded: bool = True,
) -> Backend:  # fmt: skip
    return Backend(
        url, in_rotation=in_rotation, loaded=loaded, draining=draining, capacity=capacity,
        active=active,
    )  # fmt: skip


def test_candidates_most_free_first_then_fewest_active() -> None:
    pool = BackendPool(GatewayMetrics(), poll_seconds=1.0)
    for backend in (
        _backend("http://a", capacity=4, active=3),  # 1 free
        _backend("http://b", capacity=8, active=5),  # 3 free, 5 active
        _backend("http://c", capacity=4, active=1),  # 3 free, 1 active
        _backend("http://full", capacity=2, active=2),
        _backend("http://draining", capacity=8, active=0, draining=True),
        _backend("http://gone", capacity=8, active=0, in_rotation=False),
        _backend("http://loading", capacity=8, active=0, loaded=False),
    ):
        pool.backends[backend.url] = backend
    assert [b.url for b in pool.candidates()] == ["http://c", "http://b", "http://a"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1000, 1000),
        (1003, 1003),
        (4001, 4001),
        (None, 1001),
        (1005, 1001),
        (1006, 1001),
        (999, 1001),
    ],
)
def test_only_codes_a_close_frame_may_carry_are_passed_on(code: int | None, expected: int) -> None:
    assert sendable(code, 1001) == expected


def test_backend_flags_must_be_urls(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway", "--backend", "http://10.0.0.1:8998", "--backend", "10.0.0.2:8998"]) == 2
    assert "--backend takes http://host:port URLs, not 10.0.0.2:8998" in capsys.readouterr().err


MISSING = "/nonexistent/voicefleet-pool-token"
UNREAD = f"[Errno 2] No such file or directory: '{MISSING}'"
ONE_SOURCE = "give one of --backend URL (repeated), --backends-dns NAME:PORT or --backends-pushed"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], ONE_SOURCE),
        (["--backend", "http://10.0.0.1:8998", "--backends-dns", "pool-pods:8998"], ONE_SOURCE),
        (["--backends-dns", "pool-pods:8998", "--backends-pushed"], ONE_SOURCE),
        (["--backends-pushed"], "--backends-pushed needs the pool token"),
        (["--backends-dns", "pool-pods"], "--backends-dns takes NAME:PORT, not pool-pods"),
        (["--backends-dns", "pool-pods:0"], "--backends-dns takes NAME:PORT, not pool-pods:0"),
        (["--backends-pushed", "--token-file", MISSING], f"cannot read --token-file: {UNREAD}"),
    ],
)
def test_backends_come_from_exactly_one_source(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(constants.ENV_POOL_TOKEN, raising=False)
    assert main(["gateway", *args]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ended", "close", "cut"),
    [
        (ENDED_BY_CALLER, None, None),
        (ENDED_BY_BACKEND, (1000, "session_limit"), None),  # the cap the pool asked for
        (ENDED_BY_BACKEND, (1008, "idle"), None),  # the caller's doing
        (ENDED_BY_BACKEND, (1001, "drain"), CUT_POD_DRAINED),  # a move that did not happen
        (ENDED_BY_BACKEND, (1011, "engine failure"), CUT_POD_ERROR),
        (ENDED_BACKEND_LOST, None, CUT_POD_LOST),
        (ENDED_SHUTDOWN, None, CUT_GATEWAY_SHUTDOWN),
        (ENDED_STALLED, None, None),
    ],
)
def test_only_the_platforms_ends_count_as_cuts(
    ended: str, close: tuple[int, str] | None, cut: str | None
) -> None:
    assert cut_reason(ended, close) == cut


async def test_dns_names_every_address_as_a_backend() -> None:
    # localhost: 127.0.0.1 everywhere, ::1 too where /etc/hosts says so.
    urls = await DnsBackends("localhost", 8998, 1.0).resolve()
    assert "http://127.0.0.1:8998" in urls
    assert urls <= {"http://127.0.0.1:8998", "http://[::1]:8998"}
    assert backend_url("fd00::5", 80) == "http://[fd00::5]:80"


class _Silent:
    """A caller's socket that sends nothing (the test feeds the relay's route directly)."""

    async def receive(self) -> None:
        await asyncio.Event().wait()


class _Recording:
    """A pod's socket that records what it is sent, yielding to the loop on each send as a
    real socket does when its buffer fills."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        await asyncio.sleep(0)
        self.sent.append(data)


async def test_held_messages_reach_the_new_pod_before_what_the_caller_sends_meanwhile() -> None:
    relay = Relay(_Silent(), None, constants.PATH_PCM, GatewayMetrics())  # type: ignore[arg-type]
    new = _Recording()
    relay.hold()
    for index in range(3):
        relay._to_backend(WSMsgType.BINARY, b"held %d" % index)
    pod = Upstream(_backend("http://new", capacity=2, active=0), new)  # type: ignore[arg-type]
    relay.upstream = pod  # as switch() does before it flushes
    flushing = asyncio.create_task(relay._flush(pod))
    await asyncio.sleep(0)  # the flush is inside its first send
    sink, data = relay._to_backend(WSMsgType.BINARY, b"live")
    if sink is not None:
        await sink.send_bytes(data)
    await flushing
    assert new.sent == [b"held 0", b"held 1", b"held 2", b"live"]
    relay._from_client.cancel()
