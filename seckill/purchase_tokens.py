"""One-time purchase tokens and their optional proof of work.

A token binds a user, a sale, an expiry and a random nonce under an HMAC of the server's
secret: `pt1.<sale>.<expiry ms>.<nonce>.<signature>`. The signature and binding are checked
here, without Redis; the purchase script refuses a nonce that already bought (single use).
For a sale with `pow_bits`, the client must also find a string `x` such that
sha256("<token>:<x>") starts with that many zero bits (a hashcash puzzle: cheap to check,
costly to solve in bulk).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from seckill.errors import SeckillError

TOKEN_TTL_S = 120
MAX_POW_LENGTH = 64


def invalid_token(message: str) -> SeckillError:
    return SeckillError("invalid_purchase_token", message, status=403)


def _sign(secret: bytes, user_id: str, sale_id: int, expires_ms: int, nonce: str) -> str:
    mac = hmac.new(secret, f"pt1|{len(user_id)}:{user_id}|{sale_id}|{expires_ms}|{nonce}".encode(),
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


class PurchaseTokens:
    def __init__(self, secret: str, ttl_s: int = TOKEN_TTL_S) -> None:
        self._secret = hashlib.sha256(b"purchase-token:" + secret.encode()).digest()
        self._ttl = ttl_s

    def issue(self, user_id: str, sale_id: int) -> tuple[str, int]:
        """A new token and its expiry (ms since the epoch)."""
        expires_ms = int((time.time() + self._ttl) * 1000)
        nonce = secrets.token_urlsafe(12)
        sig = _sign(self._secret, user_id, sale_id, expires_ms, nonce)
        return f"pt1.{sale_id}.{expires_ms}.{nonce}.{sig}", expires_ms

    def verify(self, token: str, user_id: str, sale_id: int) -> str:
        """The token's nonce, if it is ours, unexpired, and bound to this user and sale."""
        parts = token.split(".")
        if len(token) > 200 or not token.isascii() or len(parts) != 5 or parts[0] != "pt1":
            raise invalid_token("The purchase token is malformed.")
        _, sale, expires, nonce, sig = parts
        if not (sale.isascii() and sale.isdigit() and expires.isascii() and expires.isdigit()
                and len(sale) <= 19 and len(expires) <= 16):
            raise invalid_token("The purchase token is malformed.")
        expected = _sign(self._secret, user_id, int(sale), int(expires), nonce)
        if not hmac.compare_digest(expected, sig):
            raise invalid_token("The purchase token is not valid for you.")
        if int(sale) != sale_id:
            raise invalid_token("The purchase token is for another sale.")
        if int(expires) < time.time() * 1000:
            raise invalid_token("The purchase token has expired; ask for a new one.")
        return nonce


def pow_bits(token: str, solution: str) -> int:
    """Leading zero bits of sha256("<token>:<solution>")."""
    if not solution or len(solution) > MAX_POW_LENGTH or not solution.isascii() \
            or not token.isascii():
        return 0
    digest = int.from_bytes(hashlib.sha256(f"{token}:{solution}".encode()).digest(), "big")
    return 256 - digest.bit_length()


def solve_pow(token: str, bits: int) -> str:
    """Find a solution (what a client does; used by tests and the load generators)."""
    n = 0
    while pow_bits(token, str(n)) < bits:
        n += 1
    return str(n)
