"""A small asyncio TCP proxy that injects faults: latency, resets, black holes, outages.

This machine has no netem and no toxiproxy, so the fault tests put this proxy in front of
Redis, RabbitMQ or PostgreSQL and flip its mode while a sale runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class Mode(enum.Enum):
    PASS = "pass"            # forward everything
    BLACKHOLE = "blackhole"  # accept and hold connections, forward nothing (a silent network)
    REFUSE = "refuse"        # reset new connections and every open one (the service is down)
    MUTE = "mute"            # forward requests, drop every reply (a peer gone silent mid-call)


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    latency_s: float = 0.0
    mode: Mode = Mode.PASS
    _server: asyncio.Server | None = None
    _links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> FaultProxy:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, self.listen_host,
                                                  self.listen_port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._cut_all()
            self._open.set()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set_mode(self, mode: Mode) -> None:
        """Switch the fault; REFUSE also resets every open connection at once."""
        self.mode = mode
        if mode is Mode.PASS:
            self._open.set()
        else:
            self._open.clear()
        if mode is Mode.REFUSE:
            self._cut_all()

    def _passing(self) -> bool:
        return self.mode is Mode.PASS

    def reset_connections(self) -> None:
        """Reset every open connection once, staying in the current mode."""
        self._cut_all()

    def _cut_all(self) -> None:
        for client, upstream in list(self._links):
            for w in (client, upstream):
                transport = w.transport
                if transport is not None and not transport.is_closing():
                    transport.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.REFUSE:
            writer.transport.abort()
            return
        if self.mode is Mode.BLACKHOLE:
            await self._open.wait()  # hold the connection until the fault is lifted
            if not self._passing():
                writer.transport.abort()
                return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host,
                                                                 self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pipe(reader, up_writer),
                                 self._pipe(up_reader, writer, replies=True))
        finally:
            self._links.discard(link)
            for w in link:
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    replies: bool = False) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if replies and self.mode is Mode.MUTE:
                    continue  # lost on the way back: that connection never hears again
                if self.mode is Mode.BLACKHOLE:
                    await self._open.wait()  # traffic stalls while black-holed
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()
