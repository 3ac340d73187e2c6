"""The fair waiting room of a hot sale: a place for every shopper, admitted at a set pace.

Shoppers who arrive before the start are put in random order at the start; later ones queue
first come, first served (see lua/join_room.lua). The purchase script admits the first
`admitted()` places and refuses the rest with `not_admitted`: there is no way around it, as
the place is looked up by the user id of the verified token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from seckill.catalog import SaleCache
from seckill.errors import Conflict, NotFound
from seckill.keys import KeySpace
from seckill.sale_state import SaleState, refuse_missing
from seckill.schemas import from_ms, rfc3339
from seckill.scripts import Script, ScriptRunner


def admitted(now_ms: int, starts_ms: int, admit_per_s: int, stock: int) -> int:
    """How many places are admitted now; lua/purchase.lua enforces the same formula:
    `admit_per_s` every second from the start, or, when it is 0, twice the stock at once
    and a tenth of the stock more every second."""
    if now_ms < starts_ms:
        return 0
    elapsed = (now_ms - starts_ms) // 1000
    if admit_per_s > 0:
        return admit_per_s * (elapsed + 1)
    return 2 * stock + elapsed * max(1, stock // 10)


_REFUSALS = {
    "cancelled": ("cancelled", "This sale has been cancelled."),
    "ended": ("ended", "This sale has ended."),
    "no_waiting_room": ("no_waiting_room", "This sale has no waiting room; buy directly."),
}


@dataclass(frozen=True, slots=True)
class WaitingRoom:
    run: ScriptRunner
    keys: KeySpace
    secret: bytes
    script: Script
    cache: SaleCache
    state: SaleState

    async def place(self, sale_id: int, user_id: str, *, join: bool) -> dict[str, Any]:
        keys = self.keys.sale(sale_id)
        draw = secrets.randbelow(2**52) / 2**52
        code, place, now, starts, rate, stock = await self.run(
            self.script, [keys.state, keys.room], [user_id, repr(draw), "join" if join else "look"])
        if code == "not_loaded":
            await refuse_missing(self.cache, self.state, sale_id)
        if code == "not_in_room":
            raise NotFound("not_in_waiting_room", "You have not joined this sale's waiting room.")
        if code in _REFUSALS:
            raise Conflict(*_REFUSALS[code])
        started = now >= starts
        admitted_now = admitted(now, starts, rate, stock)
        pace = rate if rate > 0 else max(1, stock // 10)
        ahead = int(place) - admitted_now + 1
        return {
            "sale_id": str(sale_id),
            "ticket": self._ticket(sale_id, user_id),
            # Before the start the order is not drawn yet: no place to show.
            "place": int(place) + 1 if started else None,
            "admitted": started and int(place) < admitted_now,
            "estimated_wait_s": (max(0, -(-ahead // pace)) if started else
                                 max(0, -(-(starts - now) // 1000))),
            "starts_at": rfc3339(from_ms(starts)),
            "server_time": rfc3339(from_ms(now)),
        }

    def _ticket(self, sale_id: int, user_id: str) -> str:
        mac = hmac.new(self.secret, f"room|{sale_id}|{user_id}".encode(), hashlib.sha256)
        return f"wr1.{sale_id}.{mac.hexdigest()[:32]}"
