"""The page at ``/`` served by the gateway, in a real headless Chromium with a fake
microphone: a browser talks to the pool through the gateway, and when the pod holding its
conversation drains, the conversation moves on the same socket (the page sees nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.conftest import TOKEN
from tests.gateway.helpers import gateway
from tests.gateway.test_move import DRAIN, token_file
from tests.runtime.test_page import FRAMES, state_of, talked
from voicefleet import constants
from voicefleet.testing.attacks import eventually
from voicefleet.testing.attacks.common import active
from voicefleet.testing.browser import Chromium
from voicefleet.testing.loopback import http
from voicefleet.testing.runtime_process import RuntimeServer

pytestmark = pytest.mark.runtime


async def test_a_browser_keeps_talking_through_a_move(
    tmp_path: Path, two: tuple[RuntimeServer, RuntimeServer]
) -> None:
    with gateway(tmp_path, two, token_file(tmp_path)) as gw:
        async with Chromium() as browser:
            page = await browser.page()
            await page.open(gw.http + constants.PATH_PAGE)
            await page.evaluate("document.getElementById('start').click()")
            before = await talked(page, FRAMES)
            old = next(server for server in two if active(server) == 1)
            status, _, body = http("POST", old.http + constants.PATH_DRAIN, DRAIN, token=TOKEN)
            assert status == 200, body
            assert await eventually(lambda: gw.metric("conversations_moved_total") == 1, 20), (
                gw.log()
            )
            after = await talked(page, FRAMES, since=await state_of(page))
            assert active(old) == 0
            # One socket, one session, no drain notice: the page never knew.
            assert after["reconnects"] == 0 and after["session"] == before["session"]
            assert [n for n in after["notices"] if n != "text"] == ["session"], after["notices"]
            assert after["errors"] == [] and page.exceptions == [], (after, page.exceptions)
            await page.evaluate("document.getElementById('stop').click()")
            assert await eventually(lambda: sum(active(s) for s in two) == 0, 10)
            await page.close()
