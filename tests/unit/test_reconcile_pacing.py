"""The reconcile worker's pacing: a pass waits for the order queue's backlog to be stored
first, and a big sale is inspected in full on a schedule whatever its glance says."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from workers.reconcile import FullChecks, wait_for_quiet_queue


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
    assert queue.asked >= 2


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


def test_a_sale_is_glanced_at_until_its_full_inspection_is_due() -> None:
    checks = FullChecks(every_s=600)
    assert checks.may_glance(7, now=1000.0)  # first seen: the full one is due at 1600
    assert checks.may_glance(7, now=1599.0)
    assert not checks.may_glance(7, now=1600.0)
    checks.inspected(7, now=1601.0)
    assert checks.may_glance(7, now=2200.0)
    assert not checks.may_glance(7, now=2201.0)


def test_sales_no_longer_listed_are_forgotten() -> None:
    checks = FullChecks(every_s=600)
    checks.may_glance(1, now=0.0)
    checks.inspected(2, now=0.0)
    checks.keep_only({2})
    assert checks.may_glance(1, now=700.0)  # seen anew: due 600 s from now
    assert not checks.may_glance(2, now=700.0)
