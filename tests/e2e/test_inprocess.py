"""`python -m loadtest.inprocess`, briefly: each path answers as it should and is measured."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from seckill.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 90


def _rows(results: Path) -> dict[str, Any]:
    [result] = results.glob("inprocess-*.json")
    rows: dict[str, Any] = json.loads(result.read_text())["rows"]
    return rows


async def test_inprocess_measures_every_path(settings: Settings, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.inprocess", "--requests", "300", "--warmup", "100",
        "--connections", "20", "--results-dir", str(tmp_path),
        "--database-url", settings.database_url, "--redis-url", settings.redis_url,
        "--amqp-url", settings.amqp_url, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), BOUND_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    rows = _rows(tmp_path)
    assert {name: row["statuses"] for name, row in rows.items()} == {
        "reference POST": {"202": 300}, "sold-out": {"409": 300}, "winning": {"202": 300}}
    assert all(row["cpu_us_per_request"] > 0 for row in rows.values())
