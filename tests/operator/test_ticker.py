"""The per-pool ticker: periodic, one task per pool, cancelled at once, never stopped by a bug."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from voicefleet.operator.ticker import Ticker
from voicefleet.testing.polling import until

INTERVAL = 0.02


async def test_each_started_pool_ticks_on_its_own_and_stops_when_told() -> None:
    ticks: list[str] = []

    async def tick(key: str) -> None:
        ticks.append(key)

    ticker = Ticker(INTERVAL, tick)
    ticker.start("ns/a")
    ticker.start("ns/a")  # seen again: still one task
    ticker.start("ns/b")
    assert ticker.keys == {"ns/a", "ns/b"}
    await until(lambda: ticks.count("ns/a") >= 3 and ticks.count("ns/b") >= 3, timeout=5)
    ticker.stop("ns/a")
    stopped_at = ticks.count("ns/a")
    await until(lambda: ticks.count("ns/b") >= stopped_at + 5, timeout=5)  # b ticked on, a not
    assert ticks.count("ns/a") == stopped_at
    await ticker.close()
    assert ticker.keys == set()


async def test_stop_cancels_a_tick_in_progress_at_once() -> None:
    entered = asyncio.Event()
    cancelled: list[float] = []

    async def tick(key: str) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()  # a reconcile waiting on a slow API server
        except asyncio.CancelledError:
            cancelled.append(time.monotonic())
            raise

    ticker = Ticker(INTERVAL, tick)
    ticker.start("ns/slow")
    await asyncio.wait_for(entered.wait(), 5)
    asked = time.monotonic()
    ticker.stop("ns/slow")
    await until(lambda: bool(cancelled), timeout=1.0)
    assert cancelled[0] - asked < 0.1
    await ticker.close()


async def test_a_failing_tick_is_logged_and_ticks_again(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def tick(key: str) -> None:
        calls.append(key)
        raise RuntimeError("a bug")

    ticker = Ticker(INTERVAL, tick)
    with caplog.at_level(logging.ERROR, logger="voicefleet.operator.ticker"):
        ticker.start("ns/buggy")
        await until(lambda: len(calls) >= 3, timeout=5)
        await ticker.close()
    assert "periodic reconcile of ns/buggy failed" in caplog.text
    assert "RuntimeError: a bug" in caplog.text
