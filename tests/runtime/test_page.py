"""The page at ``/``, in a real headless Chromium with a fake microphone: it holds a
two-way conversation with the runtime (audio out and in, text shown), and when its pod
drains it carries on with a new conversation where the notice says."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.runtime.conftest import TOKEN
from voicefleet import constants, webpage
from voicefleet.testing.browser import Chromium, Page
from voicefleet.testing.runtime_process import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

# Two seconds of conversation: 25 frames of 80 ms each way.
FRAMES = 25


def _active(server: RuntimeServer) -> int:
    sessions = server.status()["sessions"]
    assert isinstance(sessions, dict)
    return int(sessions["active"])


async def state_of(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("JSON.parse(JSON.stringify(window.vf))")
    return state


async def talked(page: Page, frames: int, since: dict[str, Any] | None = None) -> dict[str, Any]:
    base = since or {"sent": 0, "received": 0}

    async def enough() -> dict[str, Any] | None:
        state = await state_of(page)
        more = (
            state["sent"] - base["sent"] >= frames
            and state["received"] - base["received"] >= frames
        )
        return state if more else None

    found: dict[str, Any] = await page.wait_for(enough, timeout=30, what=f"{frames} frames")
    return found


async def test_the_page_is_served_with_a_policy_that_keeps_it_to_its_own_code(
    shared_server: RuntimeServer,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(shared_server.http + constants.PATH_PAGE) as answer,
    ):
        assert answer.status == 200
        assert answer.content_type == webpage.PAGE_CONTENT_TYPE
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        assert await answer.read() == webpage.page()


async def test_a_browser_talks_to_the_runtime_from_the_page(shared_server: RuntimeServer) -> None:
    async with Chromium() as browser:
        page = await browser.page()
        await page.open(shared_server.http + constants.PATH_PAGE)
        await page.evaluate("document.getElementById('start').click()")
        state = await talked(page, FRAMES)
        assert state["session"], state
        # The tiny model's text pieces are shown as they come.
        await page.wait_for(
            lambda: page.evaluate("document.getElementById('transcript').textContent.length > 0"),
            what="text in the transcript",
        )
        assert shared_server.status()["sessions"] == {"active": 1, "capacity": 3}
        assert shared_server.metric("sessions_started_total", protocol="pcm") >= 1
        await page.evaluate("document.getElementById('stop').click()")
        await asyncio.to_thread(shared_server.wait_idle)
        final = await state_of(page)
        assert final["state"] == "idle"
        assert final["errors"] == [] and page.exceptions == [], (final, page.exceptions)
        await page.close()


async def test_the_page_moves_on_to_where_a_draining_pod_says(tmp_path: Path) -> None:
    other = start_server(tmp_path, max_sessions=2, max_session_seconds=60)
    draining = start_server(
        tmp_path,
        max_sessions=2,
        max_session_seconds=60,
        token=TOKEN,
        reconnect_url=other.http,
    )
    try:
        async with Chromium() as browser:
            page = await browser.page()
            await page.open(draining.http + constants.PATH_PAGE)
            await page.evaluate("document.getElementById('start').click()")
            await talked(page, FRAMES)
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    draining.http + constants.PATH_DRAIN,
                    json={"deadlineSeconds": 1, "reason": "test"},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as answer,
            ):
                assert answer.status == 200
            await page.wait_for(
                lambda: asyncio.to_thread(lambda: _active(draining) == 0),
                what="the drained pod to close the conversation",
            )
            after = await talked(page, FRAMES, since=await state_of(page))
            assert after["reconnects"] == 1
            assert other.status()["sessions"] == {"active": 1, "capacity": 2}
            assert after["errors"] == [] and page.exceptions == [], (after, page.exceptions)
            await page.close()
    finally:
        draining.stop()
        other.stop()
