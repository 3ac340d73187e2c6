"""What every worker gets: the shared context, a stop signal, and retry helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from seckill.context import WorkerContext, open_context

__all__ = ["Backoff", "WorkerContext", "WorkerFn", "open_context", "wait_or_stop"]

WorkerFn = Callable[[WorkerContext, asyncio.Event], Coroutine[Any, Any, None]]


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep until `seconds` pass or `stop` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Backoff:
    """Exponential backoff for retrying a service that is down."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self._first = first_s
        self._cap = cap_s
        self._next = first_s

    def reset(self) -> None:
        self._next = self._first

    async def wait(self, stop: asyncio.Event) -> None:
        await wait_or_stop(stop, self._next)
        self._next = min(self._next * 2, self._cap)
