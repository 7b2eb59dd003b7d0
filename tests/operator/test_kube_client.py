"""The Kubernetes client: answers worth asking again (429 with its Retry-After, a 5xx) are
asked again, a refusal is not; and the same Event again is one Event, counted.

The retries are checked against a small HTTP server that answers as an overloaded API server
would (the thing under test is the client); the Events against the sandbox's real one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from kubernetes import client

from tests.fixtures.sandbox import Cluster
from voicefleet import constants
from voicefleet.operator import metrics
from voicefleet.operator.events import EventRecorder
from voicefleet.operator.kube import Credentials, Kube, KubeError, load_credentials

Answers = list[tuple[int, dict[str, str]]]
FakeApi = Callable[[Answers], Awaitable[tuple["Kube", list[float]]]]


async def api_answering(answers: Answers) -> tuple[web.AppRunner, str, list[float]]:
    """A server that answers each request with the next (status, headers); when they run
    out, 200 with an empty list. Returns (runner, base URL, arrival times)."""
    arrivals: list[float] = []

    async def handle(_request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        if answers:
            status, headers = answers.pop(0)
            return web.json_response(
                {"kind": "Status", "reason": "TooManyRequests", "message": "busy"},
                status=status,
                headers=headers,
            )
        return web.json_response({"items": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", arrivals


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApi]:
    runners: list[web.AppRunner] = []
    kubes: list[Kube] = []

    async def start(answers: Answers) -> tuple[Kube, list[float]]:
        runner, url, arrivals = await api_answering(answers)
        runners.append(runner)
        kube = Kube(Credentials(server=url, ssl_context=False, headers={}))
        kubes.append(kube)
        return kube, arrivals

    yield start
    for kube in kubes:
        await kube.close()
    for runner in runners:
        await runner.cleanup()


def retries(status: int) -> float:
    return metrics.API_RETRIES.labels(str(status))._value.get()  # type: ignore[no-any-return]


async def test_a_429_is_asked_again_after_its_retry_after(fake_api: FakeApi) -> None:
    kube, arrivals = await fake_api([(429, {"Retry-After": "1"})])
    before = retries(429)
    assert await kube.list("Pod", "default") == []
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 1.0
    assert retries(429) == before + 1


async def test_a_passing_5xx_is_asked_again_and_a_lasting_one_is_raised(fake_api: FakeApi) -> None:
    kube, arrivals = await fake_api([(503, {}), (500, {})])
    assert await kube.list("Pod", "default") == []
    assert len(arrivals) == 3
    kube, arrivals = await fake_api([(503, {})] * 10)
    with pytest.raises(KubeError) as raised:
        await kube.list("Pod", "default")
    assert raised.value.status == 503 and raised.value.transient
    assert len(arrivals) == 4  # the first try and three more


async def test_a_refusal_is_not_asked_again(fake_api: FakeApi) -> None:
    kube, arrivals = await fake_api([(422, {}), (422, {})])
    with pytest.raises(KubeError) as raised:
        await kube.list("Pod", "default")
    assert raised.value.status == 422 and not raised.value.transient
    assert len(arrivals) == 1


@pytest.mark.sandbox
async def test_the_same_event_again_is_one_event_counted(
    sandbox: Cluster, kube_api: client.ApiClient, namespace: str
) -> None:
    kube = Kube(load_credentials(str(sandbox.kubeconfig)))
    try:
        recorder = EventRecorder(kube)
        involved = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "subject", "namespace": namespace, "uid": "uid-1"},
        }
        for _ in range(3):
            await recorder.record(involved, "DrainFailed", "the same words", warning=True)
        await recorder.record(involved, "DrainFailed", "other words", warning=True)
    finally:
        await kube.close()
    found = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    counts = sorted((e.message, e.count, e.type) for e in found)
    assert counts == [("other words", 1, "Warning"), ("the same words", 3, "Warning")]
    assert {e.source.component for e in found} == {constants.OPERATOR_NAME}
