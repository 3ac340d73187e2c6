"""A shopper's purchase: one atomic script decides it, the outbox pump hands it on."""

from __future__ import annotations

from dataclasses import dataclass, field

from seckill import metrics
from seckill.catalog import SaleCache
from seckill.errors import Conflict, Overloaded, SeckillError
from seckill.keys import KeySpace
from seckill.order_ids import new_order_id
from seckill.outbox import OutboxPump
from seckill.sale_state import SaleState, refuse_missing
from seckill.scripts import Attempt, PurchaseCode, PurchaseResult, RateDefaults, Scripts
from seckill.soldout import SoldOutBoard

_REFUSALS = {
    PurchaseCode.CANCELLED: "This sale has been cancelled.",
    PurchaseCode.NOT_STARTED: "This sale has not started yet.",
    PurchaseCode.ENDED: "This sale has ended.",
    PurchaseCode.LIMIT_REACHED: "You already hold as many units of this sale as allowed.",
    PurchaseCode.SOLD_OUT: "This sale is sold out.",
    PurchaseCode.IDEMPOTENCY_CONFLICT:
        "This Idempotency-Key was already used with a different quantity.",
    PurchaseCode.TOKEN_REQUIRED:
        "This sale needs a purchase token (POST /api/v1/sales/<id>/token) sent as "
        "the Purchase-Token header.",
    PurchaseCode.TOKEN_USED: "This purchase token has already bought; ask for a new one.",
}


# Labelled counters looked up once: this is the hottest line of the product.
_OUTCOMES = {code: metrics.PURCHASES.labels(code.value) for code in PurchaseCode}
_SOLD_OUT_FAST = metrics.PURCHASES_SOLD_OUT_FAST.labels()
# Answered (never raised) for most of a flash sale's requests: built once.
_SOLD_OUT = Conflict("sold_out", _REFUSALS[PurchaseCode.SOLD_OUT])


@dataclass(slots=True)  # not frozen: its __init__ would cost a call per field
class Accepted:
    order_id: str
    sale_id: int
    quantity: int

    def to_json(self) -> dict[str, object]:
        return {"order_id": self.order_id, "sale_id": str(self.sale_id),
                "quantity": self.quantity, "status": "pending"}


def rate_limited(wait_ms: int) -> SeckillError:
    return SeckillError("rate_limited", "Too many attempts; slow down.", status=429,
                        retry_after=max(1, -(-wait_ms // 1000)))


@dataclass(slots=True)
class Purchases:
    scripts: Scripts
    keys: KeySpace
    pump: OutboxPump
    cache: SaleCache
    state: SaleState
    board: SoldOutBoard
    defaults: RateDefaults = field(default_factory=RateDefaults)
    max_inflight: int = 5000
    inflight: int = 0

    def refused_locally(self, sale_id: int, user_id: str, quantity: int) -> SeckillError | None:
        """The sold-out fast path, for an attempt without an Idempotency-Key: the refusal
        Redis would certainly give, or None (ask it). Synchronous, so that most of a flash
        sale's requests need no coroutine of their own."""
        fast = self.board.refuses(sale_id, user_id, quantity)
        if fast is None:
            return None
        _SOLD_OUT_FAST.inc()
        return _SOLD_OUT if fast == 0 else rate_limited(fast)

    async def decide(self, sale_id: int, user_id: str, quantity: int,
                     idempotency_key: str | None, *, address: str | None = None,
                     token_nonce: str = "", pow_bits: int = 0) -> Accepted:
        """Redis decides (the purchase script)."""
        if self.inflight >= self.max_inflight:
            metrics.PURCHASES.labels("shed").inc()
            raise Overloaded("The sale is very busy; try again in a moment.")
        self.inflight += 1
        try:
            result = await self.scripts.purchase(
                self.keys.sale(sale_id),
                Attempt(sale_id, user_id, quantity, new_order_id(sale_id), idempotency_key,
                        address, token_nonce, pow_bits),
                self.defaults)
        finally:
            self.inflight -= 1
        return await self._outcome(sale_id, result)

    async def _outcome(self, sale_id: int, result: PurchaseResult) -> Accepted:
        code = result.code
        _OUTCOMES[code].inc()
        if code is PurchaseCode.WON:
            self.pump.submit(sale_id, result.order_id, result.order_json)
            return Accepted(result.order_id, sale_id, result.quantity)
        if code is PurchaseCode.REPLAY:
            return Accepted(result.order_id, sale_id, result.quantity)
        if code is PurchaseCode.RATE_LIMITED:
            raise rate_limited(result.quantity)
        if code is PurchaseCode.SOLD_OUT:
            self.board.saw_sold_out(sale_id, result.quantity, result.order_json)
        elif code is PurchaseCode.NOT_LOADED:
            await refuse_missing(self.cache, self.state, sale_id)
        elif code is PurchaseCode.NOT_ADMITTED:
            place = result.quantity
            raise SeckillError(
                "not_admitted",
                f"Join the waiting room first: POST /api/v1/sales/{sale_id}/queue." if place < 0
                else
                f"Your place in the waiting room ({place + 1}) is not admitted yet.",
                status=409, retry_after=1)
        elif code is PurchaseCode.POW_REQUIRED:
            raise SeckillError("pow_required", f"This sale needs a proof of work of "
                               f"{result.quantity} bits with the purchase token.", status=403)
        raise Conflict(code.value, _REFUSALS[code])
