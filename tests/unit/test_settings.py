"""Settings from the environment and a `.env` file: strict casts, clear errors."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from seckill.settings import DEV_JWT_SECRET, ConfigError, Settings, read_dotenv


@pytest.fixture
def no_dotenv(tmp_path: Path) -> Path:
    return tmp_path / "absent.env"


def test_defaults_without_environment(no_dotenv: Path) -> None:
    settings = Settings.from_env({}, dotenv=no_dotenv)
    assert settings == Settings()
    assert (settings.redis_url, settings.amqp_url, settings.database_url) == (
        "redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672/",
        "postgresql://postgres@127.0.0.1:5432/seckill")
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.using_dev_secret


def test_values_from_the_environment(no_dotenv: Path) -> None:
    settings = Settings.from_env({
        "SECKILL_REDIS_URL": "redis://r:1/2", "SECKILL_AMQP_URL": "amqp://a/",
        "SECKILL_DATABASE_URL": "postgresql://d/x", "SECKILL_JWT_SECRET": "s" * 40,
        "SECKILL_HOST": "0.0.0.0", "SECKILL_PORT": "9000", "SECKILL_LOG_LEVEL": "debug",
        "SECKILL_REDIS_POOL_SIZE": "7", "SECKILL_EXPIRY_INTERVAL_MS": "10",
        "SECKILL_OUTBOX_GRACE_MS": "0", "SECKILL_SOLD_OUT_MEMORY_MS": "0"}, dotenv=no_dotenv)
    assert (settings.redis_url, settings.amqp_url, settings.database_url) == (
        "redis://r:1/2", "amqp://a/", "postgresql://d/x")
    assert (settings.jwt_secret, settings.host, settings.port) == ("s" * 40, "0.0.0.0", 9000)
    assert (settings.log_level, settings.redis_pool_size) == ("DEBUG", 7)
    assert (settings.expiry_interval_ms, settings.outbox_grace_ms) == (10, 0)
    assert settings.sold_out_memory_ms == 0
    assert not settings.using_dev_secret


def test_empty_values_mean_the_default(no_dotenv: Path) -> None:
    settings = Settings.from_env({"SECKILL_PORT": "", "SECKILL_JWT_SECRET": "",
                                  "SECKILL_REDIS_URL": ""}, dotenv=no_dotenv)
    assert (settings.port, settings.jwt_secret, settings.redis_url) == (
        8080, DEV_JWT_SECRET, Settings().redis_url)


@pytest.mark.parametrize(("name", "raw"), [
    ("SECKILL_PORT", "abc"), ("SECKILL_PORT", "80.5"), ("SECKILL_PORT", "-1"),
    ("SECKILL_PORT", "65536"), ("SECKILL_PORT", "0x50"), ("SECKILL_PORT", "  "),
    ("SECKILL_REDIS_POOL_SIZE", "0"), ("SECKILL_REDIS_POOL_SIZE", "many"),
    ("SECKILL_DB_POOL_SIZE", "1001"), ("SECKILL_EXPIRY_INTERVAL_MS", "9"),
    ("SECKILL_EXPIRY_INTERVAL_MS", "1e3"), ("SECKILL_OUTBOX_GRACE_MS", "-5"),
    ("SECKILL_SOLD_OUT_MEMORY_MS", "-1"), ("SECKILL_SOLD_OUT_MEMORY_MS", "600001"),
])
def test_bad_integers_are_config_errors(no_dotenv: Path, name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw}, dotenv=no_dotenv)


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("SECKILL_PORT=7000\nSECKILL_HOST=from-file\n")
    settings = Settings.from_env({"SECKILL_PORT": "7001"}, dotenv=dotenv)
    assert (settings.port, settings.host) == (7001, "from-file")


def test_bad_integer_in_dotenv_is_a_config_error(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("SECKILL_PORT=eighty\n")
    with pytest.raises(ConfigError, match="SECKILL_PORT"):
        Settings.from_env({}, dotenv=dotenv)


def test_reads_os_environ_when_no_mapping_is_given(
        no_dotenv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECKILL_PORT", "7123")
    assert Settings.from_env(dotenv=no_dotenv).port == 7123


def test_read_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a comment\n\nA=1\n  B = two words  \nexport C=3\nD='quoted # not a comment'\n"
        'E="double"\nnot a pair\nF=\nG=a=b\n')
    assert read_dotenv(dotenv) == {"A": "1", "B": "two words", "C": "3",
                                   "D": "quoted # not a comment", "E": "double", "F": "",
                                   "G": "a=b"}
    assert read_dotenv(tmp_path / "missing") == {}


def test_settings_are_frozen_and_copied_with_changes() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]
    changed = settings.with_(port=1, redis_prefix="x")
    assert (changed.port, changed.redis_prefix, settings.port) == (1, "x", 8080)


def test_dev_secret_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="seckill.settings"):
        Settings(jwt_secret="s" * 40).warn_if_insecure()
        assert caplog.records == []
        Settings().warn_if_insecure()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "SECKILL_JWT_SECRET" in caplog.records[0].getMessage()
