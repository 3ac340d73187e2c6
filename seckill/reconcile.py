"""`seckill reconcile`: compare a sale's Redis state with PostgreSQL (and repair it)."""

from __future__ import annotations

from seckill.settings import Settings


def reconcile_command(settings: Settings, sale_id: str, *, repair: bool) -> int:
    raise NotImplementedError
