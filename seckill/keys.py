"""Every Redis key name, in one place, with a layout version.

All keys of one sale share the hash tag `{sale:<id>}`, so each script touches a single
Redis Cluster slot and runs unchanged on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

LAYOUT = "v1"
_MAX_REMEMBERED = 4096
_SALE_KEYS: dict[tuple[str, int], SaleKeys] = {}


@dataclass(frozen=True, slots=True)
class SaleKeys:
    tag: str
    state: str
    holders: str
    idem: str
    outbox: str
    orders: str
    released: str

    def all(self) -> list[str]:
        return [self.state, self.holders, self.idem, self.outbox, self.orders, self.released]

    @property
    def used_tokens(self) -> str:
        return f"{self.tag}:tokens"

    @property
    def room(self) -> str:
        return f"{self.tag}:room"

    # Rate-limit buckets: strings holding when the next attempt is due (purchase.lua).
    def user_bucket(self, user_id: str) -> str:
        return f"{self.tag}:rate:u:{user_id}"

    def address_bucket(self, address: str) -> str:
        return f"{self.tag}:rate:a:{address}"


@dataclass(frozen=True, slots=True)
class KeySpace:
    prefix: str = "sk"

    @property
    def base(self) -> str:
        return f"{self.prefix}:{LAYOUT}"

    def sale(self, sale_id: int) -> SaleKeys:
        """A sale's key names (built once per prefix and sale: every purchase asks)."""
        found = _SALE_KEYS.get((self.prefix, sale_id))
        if found is None:
            if len(_SALE_KEYS) >= _MAX_REMEMBERED:
                _SALE_KEYS.clear()
            found = _SALE_KEYS[self.prefix, sale_id] = self._sale(sale_id)
        return found

    def _sale(self, sale_id: int) -> SaleKeys:
        tag = f"{self.base}:{{sale:{sale_id}}}"
        return SaleKeys(
            tag=tag,
            state=f"{tag}:state",
            holders=f"{tag}:holders",
            idem=f"{tag}:idem",
            outbox=f"{tag}:outbox",
            orders=f"{tag}:orders",
            released=f"{tag}:released",
        )

    @property
    def restock_channel(self) -> str:
        """Pub/sub channel: a sale id published here got units back (or changed)."""
        return f"{self.base}:restock"

    @property
    def writers(self) -> str:
        """Hash: order writer id -> "<messages held>:<ms>" (see seckill.drain)."""
        return f"{self.base}:writers"

    @property
    def active_sales(self) -> str:
        """Set of sale ids whose state is in Redis (the relay scans their outboxes)."""
        return f"{self.base}:sales"


def idempotency_field(user_id: str, key: str) -> str:
    """Scope an Idempotency-Key to its user; the length prefix keeps the pair unambiguous."""
    return f"{len(user_id)}:{user_id}{key}"
