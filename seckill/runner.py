"""Running the processes: the front door, the workers, or both, until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from seckill.settings import Settings
from seckill.web.app import create_app

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_S = 10.0


def tune_gc() -> None:
    """Fewer, cheaper collections for a long-running server.

    The memories of a flash sale (per-user rate buckets, holders, sale caches, bodies)
    hold tens of thousands of small objects; with the default thresholds, full collections
    walk them all every few thousand requests and showed up as 100 ms stalls at the 99th
    percentile. Objects alive after start-up are frozen out of collection; young collections
    run 50x less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(35_000, 20, 100)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def serve_until(settings: Settings, stop: asyncio.Event, *, reuse_port: bool = False,
                      ready: Callable[[web.Application, int], Awaitable[None]] | None = None
                      ) -> None:
    """Serve HTTP until `stop`; then stop accepting and let in-flight requests finish."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    tune_gc()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port,
                           backlog=4096)
        await site.start()
        port = settings.port
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            port = server.sockets[0].getsockname()[1]
        log.info("front door listening on http://%s:%d (pid %d)", settings.host, port,
                 os.getpid())
        if ready is not None:
            await ready(app, port)
        await stop.wait()
        log.info("front door stopping: finishing in-flight requests")
    finally:
        await runner.cleanup()


async def run_workers(settings: Settings, names: list[str], stop: asyncio.Event) -> None:
    from seckill.context import open_context
    from workers import WORKERS

    async with open_context(settings) as ctx:
        tasks = [asyncio.ensure_future(WORKERS[name](ctx, stop)) for name in names]
        log.info("workers running: %s", ", ".join(names))
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.error("worker %s failed: %r", name, result)
                raise result


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run `main(stop)` on uvloop (when available) with SIGINT/SIGTERM setting `stop`."""
    async def wrapper() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await main(stop)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it exists
        asyncio.run(wrapper())
    else:
        uvloop.run(wrapper())


def _serve_child(settings: Settings) -> None:
    run(lambda stop: serve_until(settings, stop, reuse_port=True))


def serve_processes(settings: Settings, processes: int) -> None:
    """N front-door processes sharing one port through SO_REUSEPORT."""
    if processes <= 1:
        run(lambda stop: serve_until(settings, stop))
        return
    supervise(_serve_child, (settings,), processes)


def supervise(target: Callable[..., None], args: tuple[Any, ...], processes: int) -> None:
    """Start `processes` spawned children running `target(*args)`; forward SIGTERM and
    SIGINT to them, and return when all have exited."""
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=target, args=args, name=f"seckill-{i}")
                for i in range(processes)]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
