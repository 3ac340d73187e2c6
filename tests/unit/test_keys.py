"""Redis key names: one layout version, one hash tag per sale (Redis Cluster safe)."""

from __future__ import annotations

import re

from redis.crc import key_slot

from seckill.keys import LAYOUT, KeySpace, SaleKeys, idempotency_field


def every_key(keys: SaleKeys) -> list[str]:
    return [*keys.all(), keys.used_tokens, keys.room, keys.user_bucket("alice"),
            keys.user_bucket("{sale:99}"), keys.address_bucket("10.0.0.1")]


def hash_tag(key: str) -> str:
    """The part Redis Cluster hashes: the first non-empty {...}, else the whole key."""
    match = re.search(r"\{([^}]+)\}", key)
    assert match is not None, key
    return match.group(1)


def test_all_keys_of_a_sale_share_one_hash_tag() -> None:
    for sale_id in (1, 42, 2**63 - 1):
        keys = every_key(KeySpace("sk").sale(sale_id))
        assert {hash_tag(k) for k in keys} == {f"sale:{sale_id}"}
        assert {key_slot(k.encode()) for k in keys} == {key_slot(f"{{sale:{sale_id}}}".encode())}
        assert len(set(keys)) == len(keys)


def test_sales_do_not_share_keys() -> None:
    space = KeySpace("sk")
    first, second = set(every_key(space.sale(1))), set(every_key(space.sale(11)))
    assert not first & second


def test_prefix_and_layout_version_lead_every_key() -> None:
    space = KeySpace("t123")
    for key in [*every_key(space.sale(5)), space.active_sales, space.restock_channel]:
        assert key.startswith(f"t123:{LAYOUT}:"), key
    assert not set(every_key(KeySpace("a").sale(5))) & set(every_key(KeySpace("b").sale(5)))


def test_idempotency_field_is_unambiguous() -> None:
    pairs = [("ab", "c"), ("a", "bc"), ("a:", "b"), ("a", ":b"), ("1:a", "b"), ("1", ":ab")]
    fields = [idempotency_field(user, key) for user, key in pairs]
    assert len(set(fields)) == len(pairs)
