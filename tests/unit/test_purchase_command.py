"""The purchase script's hand-packed EVALSHA is byte for byte what hiredis would pack."""

from __future__ import annotations

from hiredis import pack_command
from hypothesis import given
from hypothesis import strategies as st

from seckill.keys import KeySpace, SaleKeys
from seckill.scripts import PurchaseCommand, RateDefaults, pack_attempt

SHA = "0123456789abcdef0123456789abcdef01234567"
text = st.text(max_size=80)  # any Unicode, "%" and "\r\n" included
# user bucket, address bucket, user, quantity, field, key, order id, nonce, pow bits
attempts = st.lists(st.tuples(text, text, text, st.integers(1, 100), text, text, text, text,
                              st.integers(0, 64)), min_size=1, max_size=5)
Attempt = tuple[str, str, str, int, str, str, str, str, int]


def hiredis_packed(keys: SaleKeys, sale_id: int, defaults: RateDefaults,
                   batch: list[Attempt]) -> bytes:
    attempt_keys = [k for a in batch for k in a[:2]]
    attempt_args = [v for a in batch for v in a[2:]]
    packed: bytes = pack_command((  # type: ignore[arg-type]
        "EVALSHA", SHA, 7 + len(attempt_keys), keys.state, keys.holders, keys.idem,
        keys.outbox, keys.orders, keys.used_tokens, keys.room, *attempt_keys,
        sale_id, defaults.user_rate_per_s, defaults.user_burst, defaults.address_rate_per_s,
        defaults.address_burst, *attempt_args))
    return packed


def ours(command: PurchaseCommand, batch: list[Attempt]) -> bytes:
    packed = [pack_attempt(*a) for a in batch]
    return command.pack([k for k, _ in packed], [a for _, a in packed])


@given(prefix=st.text(min_size=1, max_size=20), sale_id=st.integers(1, 2**63 - 1),
       rates=st.tuples(*[st.integers(0, 1_000_000)] * 4), batch=attempts)
def test_the_same_bytes_as_hiredis(prefix: str, sale_id: int, rates: tuple[int, ...],
                                   batch: list[Attempt]) -> None:
    keys = KeySpace(prefix).sale(sale_id)
    defaults = RateDefaults(*rates)
    command = PurchaseCommand(SHA, keys, sale_id, defaults)
    assert ours(command, batch) == hiredis_packed(keys, sale_id, defaults, batch)


def test_a_percent_sign_stays_literal() -> None:
    keys = KeySpace("50%off").sale(3)
    command = PurchaseCommand(SHA, keys, 3, RateDefaults())
    batch: list[Attempt] = [("b%s", "b", "u%s", 1, "", "", "o%d", "", 0),
                            ("b", "a%b", "v", 2, "f%", "k%%", "o", "n%", 3)]
    assert ours(command, batch) == hiredis_packed(keys, 3, RateDefaults(), batch)
