"""Background workers: persist orders, expire unpaid ones, relay the outbox."""

from __future__ import annotations

from workers import expiry, orders, reconcile, relay
from workers.base import WorkerFn

WORKERS: dict[str, WorkerFn] = {
    "orders": orders.run,
    "expiry": expiry.run,
    "relay": relay.run,
    "reconcile": reconcile.run,
}
