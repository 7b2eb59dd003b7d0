"""The gateway's pure decisions, without processes: which backend a conversation is offered
to first, which close codes may be passed on, and which --backend flags are refused."""

from __future__ import annotations

import pytest

from voicefleet.cli import main
from voicefleet.gateway.backends import Backend, BackendPool
from voicefleet.gateway.metrics import GatewayMetrics
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
