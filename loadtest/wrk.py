"""Drive a Plan with wrk (when installed): the fastest generator, so the server gets the CPU."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import shutil
import signal
import tempfile
from pathlib import Path

from loadtest.plan import Plan, RunResult, write_templates

LUA = Path(__file__).with_name("wrk_plan.lua")
MARK = "SECKILL_WRK_RESULT "
THREAD_DONE = "SECKILL_WRK_THREAD_DONE"


def find_wrk() -> str | None:
    return shutil.which("wrk")


async def run(plan: Plan, *, threads: int = 1, work_dir: Path | None = None,
              wrk: str = "wrk") -> RunResult:
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        templates = Path(tmp) / "templates.tsv"
        write_templates(templates, plan.templates)
        env = {
            "SECKILL_WRK_TEMPLATES": str(templates),
            "SECKILL_WRK_TOKENS": str(plan.tokens_file),
            "SECKILL_WRK_VALUES": "" if plan.values_file is None else str(plan.values_file),
            "SECKILL_WRK_THREADS": str(threads),
            "SECKILL_WRK_LIMIT": str(plan.limit or 0),
            "PATH": "/usr/bin:/bin",
        }
        duration = max(1, math.ceil(plan.duration_s))
        argv = [wrk, "-t", str(threads), "-c", str(max(plan.connections, threads)),
                "-d", f"{duration}s", "--timeout", f"{math.ceil(plan.request_timeout_s)}s",
                "-s", str(LUA), plan.base_url]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(_outputs(proc, threads), duration + 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text[-2000:]}\n"
                           f"{err.decode(errors='replace')[-2000:]}")
    r = json.loads(line.removeprefix(MARK))
    statuses = {int(k): v for k, v in r["statuses"].items()}
    socket_errors = {k: v for k, v in r["errors"].items() if v}
    return RunResult(
        generator=f"wrk -t{threads}", responses=sum(statuses.values()),
        elapsed_s=r["duration_us"] / 1e6, p50_ms=r["p50_us"] / 1000, p99_ms=r["p99_us"] / 1000,
        statuses=statuses, socket_errors=socket_errors, wrapped=r["wrapped"],
        generator_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        expected=plan.expected)


async def _outputs(proc: asyncio.subprocess.Process, threads: int) -> tuple[bytes, bytes]:
    """wrk's stdout and stderr; SIGINT (wrk's early stop) once every thread has said done."""
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    lines: list[bytes] = []
    done = 0
    async for line in proc.stdout:
        lines.append(line)
        if line.strip() == THREAD_DONE.encode():
            done += 1
            if done == threads:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
    await proc.wait()
    return b"".join(lines), await errors
