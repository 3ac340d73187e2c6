"""The Locust scenario, briefly, against this session's stack: its verdict holds exactly.

A dozen shoppers (some impatient) and the operator, for a few seconds: the operator
schedules a sale of 5 units that starts a second later, the shoppers count down to it and
buy. Nobody cancels, so what is sold is determined: exactly the stock.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg

from loadtest.client import Client
from loadtest.run_locust import locust_argv
from loadtest.verdict import Ledger, check_sale
from seckill.settings import Settings
from tests.support import Api

ROOT = Path(__file__).resolve().parents[2]
STOCK = 5
SHOPPERS = 12
LOCUST_BOUND_S = 60


async def run_locust(argv: list[str], secret: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env={**os.environ, "SECKILL_JWT_SECRET": secret},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), LOCUST_BOUND_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log[-4000:]
    return log


async def test_locust_sale_sells_exactly_the_stock(api: Api, settings: Settings,
                                                   db: asyncpg.Pool, tmp_path: Path) -> None:
    argv = locust_argv(
        api.base, users=SHOPPERS + 1, spawn_rate=SHOPPERS + 1, run_time="5s",
        stop_timeout=15, title=f"e2e-locust-{uuid.uuid4().hex[:8]}", stock=STOCK,
        starts_in=1.0, ledger_dir=tmp_path, pay_ratio=0.5, cancel_ratio=0.0,
        journey_timeout=10, extra=("--only-summary", "--loglevel", "WARNING"))
    log = await run_locust(argv, settings.jwt_secret)

    ledger = Ledger.load(tmp_path)
    assert len(ledger.sale_ids) == 1, log[-4000:]
    client = Client(api.session, api.base, settings.jwt_secret)
    verdict = await check_sale(client, ledger.sale_ids[0], db=db, ledger=ledger,
                               settle_timeout_s=20)
    assert verdict.ok, verdict.render()
    assert all(check.ok for check in verdict.checks), verdict.render()  # all decided
    facts = verdict.facts
    assert facts["demand"] >= SHOPPERS > STOCK, verdict.render()
    assert facts["remaining"] == 0
    assert facts["reserved"] == facts["orders_persisted"] == STOCK
    assert facts["rows"] == facts["wins_seen"] == STOCK
    assert len(ledger.winners) == STOCK
    assert facts["violations"] == 0
