"""The built-in load generator: aiohttp on uvloop, N keep-alive connections, in child processes.

It runs apart from the benchmark (and from the server) so that no event loop is shared: the
parent writes the plan to a file and starts `python -m loadtest.generator PLAN INDEX COUNT`
COUNT times; child INDEX sends requests INDEX, INDEX + COUNT, ... of the plan and prints its
counts and latency histogram as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from yarl import URL

from loadtest.plan import Histogram, Plan, RunResult, dump
from loadtest.processes import ROOT


async def drive(plan: Plan, index: int, count: int) -> dict[str, Any]:
    tokens = plan.tokens_file.read_text().split()
    values = plan.values_file.read_text().split() if plan.values_file is not None else []
    templates = plan.templates
    urls = [URL(plan.base_url + t.path, encoded=True) for t in templates]
    bodies = [t.body.encode() or None for t in templates]
    base_headers = [{"Content-Type": "application/json"} if t.body else {} for t in templates]
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    hist = Histogram()
    wrapped = 0
    next_i = index
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=plan.connections, limit_per_host=0,
                                     ttl_dns_cache=None, use_dns_cache=True)
    timeout = aiohttp.ClientTimeout(total=plan.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                                     skip_auto_headers=("User-Agent",)) as session:
        started = loop.time()
        deadline = started + plan.duration_s

        async def connection() -> None:
            nonlocal next_i, wrapped
            while loop.time() < deadline:
                i = next_i
                if plan.limit is not None and i >= plan.limit:
                    return
                next_i += count
                k = i % len(templates)
                headers = base_headers[k]
                template = templates[k]
                if template.auth or template.header:
                    if (template.auth and i >= len(tokens)) or \
                            (template.header and i >= len(values)):
                        wrapped += 1
                    headers = dict(headers)
                    if template.auth:
                        headers["Authorization"] = "Bearer " + tokens[i % len(tokens)]
                    if template.header:
                        headers[template.header] = values[i % len(values)]
                t0 = time.perf_counter()
                try:
                    async with session.request(templates[k].method, urls[k], data=bodies[k],
                                               headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                hist.record(time.perf_counter() - t0)
                statuses[status] += 1

        await asyncio.gather(*(connection() for _ in range(plan.connections)))
        elapsed = loop.time() - started
    return {"elapsed_s": elapsed, "statuses": dict(statuses), "errors": dict(errors),
            "histogram": hist.to_json(), "wrapped": wrapped}


async def run(plan: Plan, *, processes: int = 1, work_dir: Path | None = None) -> RunResult:
    """Run `plan` in `processes` child processes and merge what they report."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        spec = Path(tmp) / "plan.json"
        spec.write_text(dump(plan.to_json()))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.generator", str(spec), str(i), str(processes),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            for i in range(processes)]
        bound = plan.duration_s + plan.request_timeout_s + 60
        try:
            outputs = await asyncio.wait_for(
                asyncio.gather(*(p.communicate() for p in procs)), bound)
        except TimeoutError:
            for p in procs:
                if p.returncode is None:
                    p.kill()
            raise
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    parts = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"generator failed ({p.returncode}): {err.decode()[-2000:]}")
        parts.append(json.loads(out))
    hist = Histogram()
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for part in parts:
        hist.merge(Histogram.from_json(part["histogram"]))
        statuses.update({int(k): v for k, v in part["statuses"].items()})
        errors.update(part["errors"])
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return RunResult(
        generator=f"asyncio x{processes}", responses=sum(statuses.values()),
        elapsed_s=max(part["elapsed_s"] for part in parts),
        p50_ms=hist.percentile_ms(50), p99_ms=hist.percentile_ms(99),
        statuses=dict(statuses), socket_errors=dict(errors),
        wrapped=sum(part["wrapped"] for part in parts), generator_cpu_s=cpu,
        expected=plan.expected)


def main(argv: list[str]) -> int:
    spec, index, count = argv
    plan = Plan.from_json(json.loads(Path(spec).read_text()))
    result = uvloop.run(drive(plan, int(index), int(count)))
    sys.stdout.write(dump(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
