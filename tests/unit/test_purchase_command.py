"""The purchase script's hand-packed EVALSHA is byte for byte what hiredis would pack."""

from __future__ import annotations

from hiredis import pack_command
from hypothesis import given
from hypothesis import strategies as st

from seckill.keys import KeySpace, SaleKeys
from seckill.scripts import PurchaseCommand, RateDefaults

SHA = "0123456789abcdef0123456789abcdef01234567"
text = st.text(max_size=80)  # any Unicode, "%" and "\r\n" included


def hiredis_packed(keys: SaleKeys, sale_id: int, defaults: RateDefaults, user_bucket: str,
                   address_bucket: str, user_id: str, quantity: int, field: str, key: str,
                   order_id: str, nonce: str, pow_bits: int) -> bytes:
    packed: bytes = pack_command((  # type: ignore[arg-type]
        "EVALSHA", SHA, 9, keys.state, keys.holders, keys.idem, keys.outbox, keys.orders,
        user_bucket, address_bucket, keys.used_tokens, keys.room,
        user_id, quantity, field, key, order_id, sale_id, nonce, pow_bits,
        defaults.user_rate_per_s, defaults.user_burst, defaults.address_rate_per_s,
        defaults.address_burst))
    return packed


@given(prefix=st.text(min_size=1, max_size=20), sale_id=st.integers(1, 2**63 - 1),
       rates=st.tuples(*[st.integers(0, 1_000_000)] * 4), user_id=text, address=text,
       quantity=st.integers(1, 100), field=text, key=text, order_id=text, nonce=text,
       pow_bits=st.integers(0, 64))
def test_the_same_bytes_as_hiredis(prefix: str, sale_id: int, rates: tuple[int, ...],
                                   user_id: str, address: str, quantity: int, field: str,
                                   key: str, order_id: str, nonce: str, pow_bits: int) -> None:
    keys = KeySpace(prefix).sale(sale_id)
    defaults = RateDefaults(*rates)
    command = PurchaseCommand(SHA, keys, sale_id, defaults)
    args = (keys.user_bucket(user_id), keys.address_bucket(address), user_id, quantity, field,
            key, order_id, nonce, pow_bits)
    assert command.pack(*args) == hiredis_packed(keys, sale_id, defaults, *args)


def test_a_percent_sign_in_the_prefix_stays_literal() -> None:
    keys = KeySpace("50%off").sale(3)
    command = PurchaseCommand(SHA, keys, 3, RateDefaults())
    args = ("b", "b", "u%s", 1, "", "", "o%d", "", 0)
    assert command.pack(*args) == hiredis_packed(keys, 3, RateDefaults(), *args)
