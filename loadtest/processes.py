"""Child processes of a run: the reference server, `seckill serve`, `seckill worker`.

Each child logs to its own file; readiness is probed over HTTP, never slept for; stopping is
SIGTERM (the graceful path), then SIGKILL after a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

# The checkout holding `loadtest` (and, in a source tree, `seckill`): children import from it.
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (0 for a process that is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


class CpuMeter:
    """CPU spent during a run by the backing services (by process name) and by the machine.

    Per process id: a service process that ends during the run (a PostgreSQL backend)
    takes its share with it, so the figure is a lower bound, never negative.
    """

    NAMES = ("redis-server", "beam.smp", "postgres")

    def __init__(self) -> None:
        self._services = self._snapshot()
        self._machine = self._busy()

    @classmethod
    def _snapshot(cls) -> dict[int, tuple[str, float]]:
        found = {}
        for p in psutil.process_iter(["name", "cpu_times"]):
            name, times = p.info["name"], p.info["cpu_times"]
            if name in cls.NAMES and times is not None:
                found[p.pid] = (name, times.user + times.system)
        return found

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0)
                     + getattr(t, "softirq", 0.0))

    def services(self) -> dict[str, float]:
        """CPU seconds spent by each backing service since the meter was made."""
        spent = dict.fromkeys(self.NAMES, 0.0)
        for pid, (name, cpu) in self._snapshot().items():
            before = self._services.get(pid)
            spent[name] += max(0.0, cpu - (before[1] if before else 0.0))
        return spent

    def machine(self) -> float:
        """CPU seconds spent on all cores by everything on the machine."""
        return self._busy() - self._machine


@dataclass
class Service:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.returncode is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait for the graceful exit, SIGKILL (the whole group) after the deadline."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                await self.process.wait()
        return self.process.returncode


async def start(name: str, argv: list[str], *, env: Mapping[str, str], log_dir: Path) -> Service:
    """Start `argv` in its own process group, in `log_dir` (so no stray `.env` is read),
    with `env` added to this process's environment and ROOT first on the import path."""
    log_path = log_dir / f"{name}.log"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *argv, env={**os.environ, "PYTHONPATH": path, **env}, cwd=log_dir,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    return Service(name, process, log_path)


async def wait_http(url: str, service: Service, *, timeout_s: float = 30.0,
                    expect: int = 200) -> None:
    """Poll `url` until it answers `expect`; fail at once if the service exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if not service.running():
                raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n"
                                   f"{service.tail()}")
            try:
                async with session.get(url) as resp:
                    if resp.status == expect:
                        return
                    last = f"{resp.status} {await resp.text()}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{service.name} not ready at {url} after {timeout_s}s ({last}):\n"
                       f"{service.tail()}")


def seckill_argv(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "seckill", command, *args]


def reference_argv(port: int, processes: int) -> list[str]:
    return [sys.executable, "-m", "loadtest.reference", "--port", str(port),
            "--processes", str(processes)]
