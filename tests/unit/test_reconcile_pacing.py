"""The reconcile worker's pass waits for the order queue's backlog to be stored first."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from workers.reconcile import wait_for_quiet_queue


class Queue:
    """Ready messages the worker would read, one answer per ask (the last one repeats)."""

    def __init__(self, answers: Iterable[int | None]) -> None:
        self.answers = list(answers)
        self.asked = 0
        self.called = asyncio.Event()

    async def __call__(self) -> int | None:
        self.asked += 1
        self.called.set()
        return self.answers[min(self.asked, len(self.answers)) - 1]


async def test_a_quiet_queue_lets_the_pass_go_at_once() -> None:
    queue = Queue([0])
    assert await wait_for_quiet_queue(queue, asyncio.Event(), bound_s=60) == 0
    assert queue.asked == 1


async def test_the_pass_waits_until_the_backlog_is_stored() -> None:
    queue = Queue([20_000, 8_000, 150, 0, 99])
    assert await wait_for_quiet_queue(queue, asyncio.Event(), bound_s=60, poll_s=0.001) == 0
    assert queue.asked == 4


async def test_a_queue_that_never_drains_waits_the_bound_only() -> None:
    queue = Queue([7])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await wait_for_quiet_queue(queue, asyncio.Event(), bound_s=0.05, poll_s=0.01) == 7
    assert loop.time() - started >= 0.05
    assert queue.asked >= 3


async def test_rabbitmq_that_cannot_be_asked_does_not_hold_the_pass() -> None:
    queue = Queue([None])
    assert await wait_for_quiet_queue(queue, asyncio.Event(), bound_s=60) is None
    assert queue.asked == 1


async def test_stop_ends_the_wait() -> None:
    queue = Queue([5])
    stop = asyncio.Event()
    waiting = asyncio.create_task(wait_for_quiet_queue(queue, stop, bound_s=60, poll_s=30))
    await asyncio.wait_for(queue.called.wait(), 5)
    stop.set()
    assert await asyncio.wait_for(waiting, 5) == 5
