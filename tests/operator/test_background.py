"""Background work: a task cancelled before it ran leaves no coroutine unawaited. The chaos
run's operator logs showed ``RuntimeWarning: coroutine 'Fleet._schedule_recheck.<locals>.run'
was never awaited``: a NotReady recheck is cancelled by the next node event, often before it
started."""

from __future__ import annotations

import asyncio
import gc
import warnings

from voicefleet.operator.background import Background
from voicefleet.operator.kube import Credentials, Kube


async def test_a_task_cancelled_before_it_ran_leaves_no_coroutine_unawaited() -> None:
    # Nothing here calls the API: the client only has to exist.
    background = Background(Kube(Credentials("https://127.0.0.1:1", False, {})))
    ran: list[bool] = []

    async def work() -> None:
        ran.append(True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = background.spawn(work())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        del task
        for _ in range(3):  # the loop drops its last reference to the task's work
            await asyncio.sleep(0)
        gc.collect()
    assert ran == []
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    await background.close()


async def test_spawned_work_runs_and_is_forgotten_once_done() -> None:
    background = Background(Kube(Credentials("https://127.0.0.1:1", False, {})))
    done = asyncio.Event()

    async def work() -> None:
        done.set()

    task = background.spawn(work())
    await asyncio.wait_for(done.wait(), timeout=5)
    await task
    assert task.done() and not task.cancelled()
    await background.close()
