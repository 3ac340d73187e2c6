"""`seckill migrate`: creates the database, applies each migration once, notices tampering."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import seckill.migrate
from seckill.migrate import MigrationError, migrate
from seckill.resources import migration_files
from tests.support import unique

ADMIN_URL = os.environ.get("SECKILL_TEST_DATABASE_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
async def throwaway() -> AsyncIterator[str]:
    """The URL of a database that does not exist yet; dropped afterwards."""
    name = unique("seckill_migrate").replace("-", "_")
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def schema(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        return {
            "columns": [tuple(r) for r in await conn.fetch(
                "SELECT table_name, column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'public' "
                "ORDER BY table_name, column_name")],
            "indexes": [tuple(r) for r in await conn.fetch(
                "SELECT tablename, indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = 'public' ORDER BY tablename, indexname")],
            "constraints": [tuple(r) for r in await conn.fetch(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
                "ORDER BY 1, 2")],
            "migrations": [tuple(r) for r in await conn.fetch(
                "SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version")],
        }
    finally:
        await conn.close()


async def database_exists(url: str) -> bool:
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await admin.close()


async def test_creates_the_database_and_applies_every_migration(throwaway: str) -> None:
    assert not await database_exists(throwaway)
    report = await migrate(throwaway)
    assert report.created_database
    assert report.applied == [version for version, _ in migration_files()]
    assert report.applied[0] == "0001_core"
    found = await schema(throwaway)
    assert {c[0] for c in found["columns"]} >= {"products", "sales", "orders",
                                                 "schema_migrations"}
    assert [m[0] for m in found["migrations"]] == report.applied


async def test_migrating_twice_changes_nothing(throwaway: str) -> None:
    await migrate(throwaway)
    before = await schema(throwaway)
    again = await migrate(throwaway)
    assert (again.created_database, again.applied) == (False, [])
    assert await schema(throwaway) == before


async def test_a_new_migration_is_applied_on_the_next_run(
        throwaway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await migrate(throwaway)
    shipped = migration_files()
    monkeypatch.setattr(seckill.migrate, "migration_files", lambda: [
        *shipped, ("9999_test_extra", "CREATE TABLE test_extra (id int PRIMARY KEY);")])
    report = await migrate(throwaway)
    assert report.applied == ["9999_test_extra"]
    assert "test_extra" in {c[0] for c in (await schema(throwaway))["columns"]}
    assert (await migrate(throwaway)).applied == []


async def test_a_failing_migration_leaves_nothing_behind(
        throwaway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await migrate(throwaway)
    before = await schema(throwaway)
    shipped = migration_files()
    monkeypatch.setattr(seckill.migrate, "migration_files", lambda: [
        *shipped, ("9999_broken", "CREATE TABLE half_done (id int); SELECT 1/0;")])
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(throwaway)
    assert await schema(throwaway) == before
    monkeypatch.setattr(seckill.migrate, "migration_files", lambda: shipped)
    # The advisory lock was let go: the next run proceeds (and has nothing to do).
    assert (await asyncio.wait_for(migrate(throwaway), 10)).applied == []


async def test_a_tampered_migration_is_refused(throwaway: str) -> None:
    await migrate(throwaway)
    conn = await asyncpg.connect(throwaway)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'tampered' "
                           "WHERE version = '0001_core'")
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match="0001_core"):
        await migrate(throwaway)


async def test_a_changed_migration_file_is_refused(
        throwaway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await migrate(throwaway)
    edited = [(v, sql + "\n-- edited\n") if v == "0001_core" else (v, sql)
              for v, sql in migration_files()]
    monkeypatch.setattr(seckill.migrate, "migration_files", lambda: edited)
    with pytest.raises(MigrationError, match="0001_core"):
        await migrate(throwaway)


async def test_concurrent_migrations_of_an_existing_database(throwaway: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{throwaway.rsplit("/", 1)[1]}"')
    finally:
        await admin.close()
    reports = await asyncio.gather(*(migrate(throwaway) for _ in range(4)))
    applied = [r.applied for r in reports if r.applied]
    assert applied == [[version for version, _ in migration_files()]]
    assert not any(r.created_database for r in reports)


async def test_concurrent_migrations_of_a_missing_database(throwaway: str) -> None:
    reports = await asyncio.gather(*(migrate(throwaway) for _ in range(8)),
                                   return_exceptions=True)
    assert not [r for r in reports if isinstance(r, BaseException)], reports
    assert sum(r.created_database for r in reports) == 1  # type: ignore[union-attr]
