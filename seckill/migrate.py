"""Apply the ordered SQL files of `migrations/`, tracked in `schema_migrations`."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from seckill.resources import migration_files

log = logging.getLogger(__name__)

_LOCK_ID = 0x5EC411  # advisory lock: one migrator at a time

_TRACKING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


class MigrationError(RuntimeError):
    """An applied migration no longer matches its file."""


@dataclass(frozen=True, slots=True)
class MigrationReport:
    created_database: bool
    applied: list[str]


def _split_database(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "postgres"
    admin = urlunsplit(parts._replace(path="/postgres"))
    return name, admin


async def ensure_database(url: str) -> bool:
    """Create the database of `url` if it does not exist; True when it was created."""
    name, admin_url = _split_database(url)
    conn = await asyncpg.connect(admin_url)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # created meanwhile by a concurrent migrate
        return True
    finally:
        await conn.close()


async def migrate(url: str) -> MigrationReport:
    created = await ensure_database(url)
    conn = await asyncpg.connect(url)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(_TRACKING)
            done = {r["version"]: r["checksum"]
                    for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
            for version, sql in migration_files():
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version] != checksum:
                        raise MigrationError(
                            f"migration {version} was applied but its file has changed since")
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                        version, checksum)
                log.info("applied migration %s", version)
                applied.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()
    return MigrationReport(created, applied)


async def pending(url: str) -> list[str] | None:
    """Migrations not applied yet; None when the database does not exist."""
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")} \
            if exists else set()
    finally:
        await conn.close()
    return [version for version, _ in migration_files() if version not in done]
