"""Order ids: a ULID, then "-" and the sale id, so a pending order can be found by its sale.

The ULID is 48 bits of Unix milliseconds and 80 random bits in Crockford's base32 (26
characters, time-ordered, unguessable). python-ulid builds one in ~9 us, a tenth of a
winning purchase on our machines; here the time part is encoded once per millisecond and
the random part is cut from a pool of `os.urandom` bytes mapped to the alphabet in one
`bytes.translate` (256 is a multiple of 32: every symbol is equally likely, 5 random bits
a character). A forked process starts with an empty pool, so two processes never share one.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TO_SYMBOL = bytes(ord(_ALPHABET[b & 31]) for b in range(256))
_RANDOM_CHARS = 16  # 80 bits
_POOL_IDS = 4096


class _Pool:
    __slots__ = ("at", "chars", "ms", "stamp")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ms = -1
        self.stamp = ""
        self.chars = ""
        self.at = 0

    def refill(self) -> None:
        self.chars = os.urandom(_RANDOM_CHARS * _POOL_IDS).translate(_TO_SYMBOL).decode()
        self.at = 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)


def new_order_id(sale_id: int) -> str:
    pool = _pool
    ms = time.time_ns() // 1_000_000
    if ms > pool.ms:  # never backwards, should the clock be set back
        pool.ms, pool.stamp = ms, _time_part(ms)
    at = pool.at
    if at >= len(pool.chars):
        pool.refill()
        at = 0
    pool.at = at + _RANDOM_CHARS
    return f"{pool.stamp}{pool.chars[at:at + _RANDOM_CHARS]}-{sale_id}"


def _time_part(ms: int) -> str:
    chars = []
    for _ in range(10):
        chars.append(_ALPHABET[ms & 31])
        ms >>= 5
    return "".join(reversed(chars))


def _is_ulid(text: str) -> bool:
    """What `ULID.from_str` accepts (any case; 128 bits at most), without building one:
    the order writer checks every order id it reads, and python-ulid's decode was a seventh
    of its CPU."""
    return (len(text) == 26 and text.isascii() and text[0] in "01234567"
            and not text.upper().strip(_ALPHABET))


def sale_of_order(order_id: str) -> int | None:
    ulid, sep, sale = order_id.partition("-")
    if not sep or not _is_ulid(ulid) or not (sale.isascii() and sale.isdigit()) \
            or len(sale) > 19:
        return None
    sale_id = int(sale)
    return sale_id if 0 < sale_id < 2**63 else None
