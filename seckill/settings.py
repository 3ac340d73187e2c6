"""Configuration: one frozen dataclass, read from the environment (and an optional `.env`)."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

DEV_JWT_SECRET = "seckill-development-secret-do-not-use-in-production"


class ConfigError(ValueError):
    """A setting has a value we cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _networks(raw: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in raw.split(",") if x.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"SECKILL_TRUSTED_PROXIES: {item!r} is not an address or CIDR "
                              "block") from None
    return items


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a minimal `.env` file: KEY=VALUE lines, `#` comments, optional quotes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/seckill"
    jwt_secret: str = DEV_JWT_SECRET
    host: str = "127.0.0.1"
    port: int = 8080
    # Prefix of every Redis key: tests give each session its own.
    redis_prefix: str = "sk"
    # Prefix of every RabbitMQ exchange and queue name.
    amqp_prefix: str = "seckill"
    redis_pool_size: int = 64
    db_pool_size: int = 10
    publish_timeout_s: float = 5.0
    # Outbox entries older than this are republished by the relay.
    outbox_grace_ms: int = 3000
    # Orders per INSERT (a message may carry up to 500 orders).
    order_batch_size: int = 2000
    order_batch_wait_ms: int = 20
    consumer_prefetch: int = 64
    delivery_limit: int = 20
    expiry_interval_ms: int = 500
    log_level: str = "INFO"
    # Rate limits of sales without state in Redis (a sale's own settings win otherwise).
    user_rate_per_s: int = 5
    user_burst: int = 10
    address_rate_per_s: int = 0
    address_burst: int = 0
    # Proxies whose X-Forwarded-For is believed (exact addresses or CIDR blocks).
    trusted_proxies: tuple[str, ...] = ()
    # Purchases in flight per process before new ones get 503 overloaded.
    max_inflight_purchases: int = 5000
    # How long a front-door process trusts its memory of a sold-out sale (0: never).
    sold_out_memory_ms: int = 1000
    request_timeout_s: float = 10.0
    jwt_leeway_s: int = 30

    @property
    def using_dev_secret(self) -> bool:
        return self.jwt_secret == DEV_JWT_SECRET

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
        merged: dict[str, str] = {}
        merged.update(read_dotenv(dotenv or Path(".env")))
        merged.update(os.environ if env is None else env)
        d = cls()
        return cls(
            redis_url=merged.get("SECKILL_REDIS_URL") or d.redis_url,
            amqp_url=merged.get("SECKILL_AMQP_URL") or d.amqp_url,
            database_url=merged.get("SECKILL_DATABASE_URL") or d.database_url,
            jwt_secret=merged.get("SECKILL_JWT_SECRET") or d.jwt_secret,
            host=merged.get("SECKILL_HOST") or d.host,
            port=_int(merged, "SECKILL_PORT", d.port, 0, 65535),
            redis_prefix=merged.get("SECKILL_REDIS_PREFIX") or d.redis_prefix,
            amqp_prefix=merged.get("SECKILL_AMQP_PREFIX") or d.amqp_prefix,
            redis_pool_size=_int(merged, "SECKILL_REDIS_POOL_SIZE", d.redis_pool_size, 1, 10_000),
            db_pool_size=_int(merged, "SECKILL_DB_POOL_SIZE", d.db_pool_size, 1, 1000),
            log_level=(merged.get("SECKILL_LOG_LEVEL") or d.log_level).upper(),
            user_rate_per_s=_int(merged, "SECKILL_USER_RATE_PER_S", d.user_rate_per_s, 0,
                                 1_000_000),
            user_burst=_int(merged, "SECKILL_USER_BURST", d.user_burst, 0, 1_000_000),
            address_rate_per_s=_int(merged, "SECKILL_ADDRESS_RATE_PER_S", d.address_rate_per_s,
                                    0, 1_000_000),
            address_burst=_int(merged, "SECKILL_ADDRESS_BURST", d.address_burst, 0, 1_000_000),
            trusted_proxies=_networks(merged.get("SECKILL_TRUSTED_PROXIES", "")),
            max_inflight_purchases=_int(merged, "SECKILL_MAX_INFLIGHT_PURCHASES",
                                        d.max_inflight_purchases, 1, 10_000_000),
            sold_out_memory_ms=_int(merged, "SECKILL_SOLD_OUT_MEMORY_MS", d.sold_out_memory_ms,
                                    0, 600_000),
            expiry_interval_ms=_int(
                merged, "SECKILL_EXPIRY_INTERVAL_MS", d.expiry_interval_ms, 10, 600_000
            ),
            outbox_grace_ms=_int(
                merged, "SECKILL_OUTBOX_GRACE_MS", d.outbox_grace_ms, 0, 3_600_000
            ),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def warn_if_insecure(self) -> None:
        if self.using_dev_secret:
            log.warning(
                "SECKILL_JWT_SECRET is not set: using the DEVELOPMENT secret. "
                "Anyone can mint tokens. Set SECKILL_JWT_SECRET before going live."
            )

