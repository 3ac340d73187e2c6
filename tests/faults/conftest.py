"""Fixtures of the fault tests: their own database and vhost, and a `Cluster` per test.

The faults package does not use the session `stack` (its in-process workers would consume
the very queues these tests kill consumers of): each test starts the `seckill` processes it
needs, on its own Redis prefix and RabbitMQ names, and `Cluster.close()` undoes everything.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import asyncpg
import pytest

from tests.faults.harness import Cluster
from tests.support import Isolation, isolated

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_numbers = itertools.count(1)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
async def fault_isolation() -> AsyncIterator[Isolation]:
    async with isolated() as iso:
        yield iso


@pytest.fixture(scope="session")
async def fault_db(fault_isolation: Isolation) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(fault_isolation.settings.database_url, min_size=1,
                                     max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def cluster(fault_isolation: Isolation, tmp_path: Path,
                  request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    n = next(_numbers)
    base = fault_isolation.settings
    settings = base.with_(redis_prefix=f"{base.redis_prefix}f{n}",
                          amqp_prefix=f"{base.amqp_prefix}-f{n}")
    cluster = Cluster(settings, tmp_path)
    try:
        yield cluster
    finally:
        await cluster.close()
        call = request.node.stash.get(_REPORTS, {}).get("call")
        if call is None or call.failed:
            print(f"\n----- logs of the seckill processes (in {tmp_path}) -----")
            print(cluster.logs())
