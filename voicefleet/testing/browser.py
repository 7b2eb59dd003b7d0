"""A real headless Chromium, driven over the DevTools protocol (CDP) with the aiohttp client
the project already has: open a page, run JavaScript in it, read what it logged.

Chromium's fake media devices stand in for a microphone (a tone with a beep each second)
and permission prompts are answered yes, so a page's ``getUserMedia`` and audio output run
as they would for a user. Debian's package puts the browser at /usr/bin/chromium
(``scripts/setup-host.sh`` installs it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from voicefleet.testing.processes import terminate

CHROMIUM = os.environ.get("VOICEFLEET_CHROMIUM", "chromium")
START_SECONDS = 20.0
FLAGS = (
    "--headless=new",
    "--remote-debugging-port=0",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # Root in a container has no user namespaces for Chromium's sandbox.
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
)


class BrowserError(Exception):
    """Chromium could not start, or a script failed in the page."""


def chromium_path() -> str:
    found = shutil.which(CHROMIUM)
    if found is None:
        raise BrowserError(
            f"{CHROMIUM} not found: run scripts/setup-host.sh (Debian's chromium package), "
            "or point VOICEFLEET_CHROMIUM at a Chromium binary"
        )
    return found


class Page:
    """One tab, over its own CDP socket; console messages and uncaught errors are kept."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            waiting = self._waiting.pop(data.get("id", -1), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"]["args"]
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                self.console.append(f"{data['params']['type']}: {text}")
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                thrown = details.get("exception", {}).get("description", details.get("text"))
                self.exceptions.append(str(thrown))
        for waiting in self._waiting.values():
            waiting.set_exception(BrowserError("the browser closed the DevTools socket"))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self._socket.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        answer = await future
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def open(self, url: str) -> None:
        """Load ``url`` and wait until its scripts have run."""
        await self.call("Runtime.enable")
        await self.call("Page.enable")
        await self.call("Page.navigate", url=url)
        await self.wait_for(lambda: self.evaluate("document.readyState === 'complete'"))

    async def evaluate(self, expression: str) -> Any:
        """The expression's value (promises awaited), as if typed by a user who just clicked."""
        result = await self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            userGesture=True,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(
        self, check: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = ""
    ) -> Any:
        """Poll ``check`` until it returns something truthy."""
        deadline = asyncio.get_running_loop().time() + timeout
        last: Any = None
        while asyncio.get_running_loop().time() < deadline:
            last = await check()
            if last:
                return last
            await asyncio.sleep(0.1)
        raise BrowserError(f"timed out waiting for {what or 'the page'} (last: {last!r})")

    async def close(self) -> None:
        await self._socket.close()
        await self._reader


class Chromium:
    """``async with Chromium() as browser: page = await browser.page()``."""

    def __init__(self) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="vf-chromium-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._endpoint = ""
        self.log = self._profile / "chromium.log"

    async def __aenter__(self) -> Chromium:
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [chromium_path(), *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Chromium writes the port it picked (and the browser socket's path) into the profile.
        active = self._profile / "DevToolsActivePort"
        deadline = asyncio.get_running_loop().time() + START_SECONDS
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if self._process.poll() is not None or asyncio.get_running_loop().time() > deadline:
                raise BrowserError(f"chromium did not start: {self.log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        port = active.read_text().splitlines()[0]
        self._endpoint = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        return self

    async def page(self) -> Page:
        assert self._session is not None
        async with self._session.put(f"{self._endpoint}/json/new?about:blank") as answer:
            target = await answer.json()
        socket = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        return Page(socket)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            terminate(self._process)
        shutil.rmtree(self._profile, ignore_errors=True)
