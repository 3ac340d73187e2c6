"""A shopper's purchase: one atomic script decides it, the outbox pump hands it on."""

from __future__ import annotations

from dataclasses import dataclass

from ulid import ULID

from seckill import metrics
from seckill.catalog import SaleCache, utcnow
from seckill.errors import Conflict, Overloaded, sale_not_found
from seckill.keys import KeySpace
from seckill.outbox import OutboxPump
from seckill.sale_state import SaleState
from seckill.scripts import PurchaseCode, Scripts
from seckill.soldout import SoldOutBoard

_REFUSALS = {
    PurchaseCode.CANCELLED: "This sale has been cancelled.",
    PurchaseCode.NOT_STARTED: "This sale has not started yet.",
    PurchaseCode.ENDED: "This sale has ended.",
    PurchaseCode.LIMIT_REACHED: "You already hold as many units of this sale as allowed.",
    PurchaseCode.SOLD_OUT: "This sale is sold out.",
    PurchaseCode.IDEMPOTENCY_CONFLICT:
        "This Idempotency-Key was already used with a different quantity.",
}


def new_order_id(sale_id: int) -> str:
    """A ULID (time-ordered, unguessable) followed by the sale id, so a pending order can be
    found in its sale's Redis state before PostgreSQL has it."""
    return f"{ULID()}-{sale_id}"


def sale_of_order(order_id: str) -> int | None:
    ulid, sep, sale = order_id.partition("-")
    if not sep or len(ulid) != 26 or not sale.isdigit() or len(sale) > 19:
        return None
    try:
        ULID.from_str(ulid)
    except ValueError:
        return None
    sale_id = int(sale)
    return sale_id if 0 < sale_id < 2**63 else None


@dataclass(frozen=True, slots=True)
class Accepted:
    order_id: str
    sale_id: int
    quantity: int

    def to_json(self) -> dict[str, object]:
        return {"order_id": self.order_id, "sale_id": str(self.sale_id),
                "quantity": self.quantity, "status": "pending"}


@dataclass(frozen=True, slots=True)
class Purchases:
    scripts: Scripts
    keys: KeySpace
    pump: OutboxPump
    cache: SaleCache
    state: SaleState
    board: SoldOutBoard

    async def purchase(self, sale_id: int, user_id: str, quantity: int,
                       idempotency_key: str | None) -> Accepted:
        if idempotency_key is None and self.board.refuses(sale_id, user_id, quantity):
            metrics.PURCHASES_SOLD_OUT_FAST.inc()
            raise Conflict("sold_out", _REFUSALS[PurchaseCode.SOLD_OUT])
        result = await self.scripts.purchase(
            self.keys.sale(sale_id), sale_id=sale_id, user_id=user_id, quantity=quantity,
            idempotency_key=idempotency_key, order_id=new_order_id(sale_id))
        code = result.code
        metrics.PURCHASES.labels(code.value).inc()
        if code is PurchaseCode.WON:
            self.pump.submit(sale_id, result.order_id, result.order_json)
            return Accepted(result.order_id, sale_id, result.quantity)
        if code is PurchaseCode.REPLAY:
            return Accepted(result.order_id, sale_id, result.quantity)
        if code is PurchaseCode.SOLD_OUT:
            self.board.saw_sold_out(sale_id, result.quantity, result.order_json)
        elif code is PurchaseCode.NOT_LOADED:
            await self._not_loaded(sale_id)
        raise Conflict(code.value, _REFUSALS[code])

    async def _not_loaded(self, sale_id: int) -> None:
        """Redis has no state for this sale: unknown (404), over, or to be rebuilt (503)."""
        sale = await self.cache.get(sale_id)
        if sale is None:
            raise sale_not_found()
        if sale.cancelled:
            raise Conflict("cancelled", _REFUSALS[PurchaseCode.CANCELLED])
        if sale.ended(utcnow()):
            raise Conflict("ended", _REFUSALS[PurchaseCode.ENDED])
        self.state.rebuild_soon(sale)
        raise Overloaded("This sale is being restored; try again in a moment.", retry_after=1)
