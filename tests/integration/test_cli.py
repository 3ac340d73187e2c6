"""The `seckill` command: clear sentences instead of tracebacks, and working tokens."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt
import pytest

from seckill.settings import Settings


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "SECKILL_LOG_LEVEL": "ERROR", **env}
    return subprocess.run([sys.executable, "-m", "seckill", *args], capture_output=True,
                          text=True, timeout=60, env=full, check=False)


def test_token_prints_a_token_the_server_accepts() -> None:
    done = _run("token", "alice", "--operator", "--ttl", "60", SECKILL_JWT_SECRET="s" * 40)
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), "s" * 40, algorithms=["HS256"])
    assert (claims["sub"], claims["role"], claims["exp"] - claims["iat"]) == ("alice",
                                                                             "operator", 60)


@pytest.mark.parametrize("args", [("token", "u" * 65), ("token", "a", "--ttl", "0"),
                                  ("worker", "no-such-worker"), ("reconcile", "abc")])
def test_bad_arguments_are_one_sentence(args: tuple[str, ...], settings: Settings) -> None:
    done = _run(*args, SECKILL_DATABASE_URL=settings.database_url,
                SECKILL_REDIS_URL=settings.redis_url, SECKILL_AMQP_URL=settings.amqp_url)
    assert done.returncode == 2
    assert done.stderr.startswith("seckill: ") and "Traceback" not in done.stderr


def test_an_unmigrated_database_is_named(settings: Settings) -> None:
    missing = settings.database_url.rsplit("/", 1)[0] + "/seckill_never_created"
    done = _run("serve", SECKILL_DATABASE_URL=missing, SECKILL_REDIS_URL=settings.redis_url,
                SECKILL_AMQP_URL=settings.amqp_url)
    assert done.returncode == 2
    assert "seckill migrate" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_service_is_named_with_both_ways_to_get_it(settings: Settings) -> None:
    done = _run("serve", SECKILL_DATABASE_URL=settings.database_url,
                SECKILL_REDIS_URL="redis://127.0.0.1:1/0", SECKILL_AMQP_URL=settings.amqp_url)
    assert done.returncode == 2
    assert "Redis is not reachable at 127.0.0.1:1" in done.stderr
    assert "docker compose up -d redis" in done.stderr and "redis-server" in done.stderr
    assert "Traceback" not in done.stderr
