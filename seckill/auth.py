"""Bearer tokens: HS256 JWTs verified without a database, with a cache of verified tokens.

Verification is the hot path of a flash sale, where most requests carry a token never seen
before: PyJWT spends ~21 us on one. HS256 alone is simple enough to check directly (a strict
base64url split, one HMAC, a msgspec decode: ~5 us), and only HS256 is accepted — `alg:
none`, other algorithms and `crit` headers are refused. PyJWT mints tokens, and the unit
tests hold both to the same verdicts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

import jwt
import msgspec

from seckill.errors import Forbidden, Unauthorized

MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    operator: bool


class TokenVerifier:
    """Verifies tokens once; a verified token is cached until its `exp` (plus leeway)."""

    def __init__(self, secret: str, *, leeway_s: int = 30, cache_size: int = 200_000) -> None:
        self._key = secret.encode()
        self._good_heads: set[str] = set()
        self._leeway = leeway_s
        self._cache_size = cache_size
        self._cache: dict[str, tuple[Principal, float]] = {}

    def verify_header(self, header: str | None) -> Principal:
        if not header:
            raise Unauthorized("The Authorization header with a bearer token is missing.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("The Authorization header must be 'Bearer <token>'.")
        return self.verify(token.strip())

    def verify(self, token: str) -> Principal:
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None:
            principal, good_until = hit
            if now <= good_until:
                return principal
            del self._cache[token]
            raise Unauthorized("The token has expired.")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The token is too long.")
        claims = self._hs256_claims(token)
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not _number(exp):
            raise Unauthorized("The token is not valid: `exp` must be a number.")
        if now > exp + self._leeway:
            raise Unauthorized("The token has expired.")
        if nbf is not None and (not _number(nbf) or now < nbf - self._leeway):
            raise Unauthorized("The token is not valid yet.")
        if iat is not None and (not _number(iat) or now < iat - self._leeway):
            raise Unauthorized("The token is not valid: issued in the future.")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 1 <= len(sub) <= 64 or not sub.isprintable():
            raise Unauthorized("The token's subject must be a user id of 1 to 64 printable "
                               "characters.")
        principal = Principal(sub, claims.get("role") == "operator")
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = (principal, float(exp) + self._leeway)
        return principal


    def _hs256_claims(self, token: str) -> dict[str, Any]:
        if not _JWS.fullmatch(token):
            raise Unauthorized("The token is not valid.")
        head, payload, signature = token.split(".")
        mac = hmac.digest(self._key, f"{head}.{payload}".encode(), "sha256")
        # The canonical encoding of our MAC (32 bytes: 43 characters and one "=").
        if not hmac.compare_digest(base64.urlsafe_b64encode(mac)[:-1], signature.encode()):
            raise Unauthorized("The token is not valid.")
        try:
            if head not in self._good_heads:
                header = _decode_object(_b64(head))
                if header.get("alg") != "HS256" or "crit" in header:
                    raise Unauthorized("The token is not valid.")
                if len(self._good_heads) < 64:  # the few headers our issuers write
                    self._good_heads.add(head)
            return _decode_object(_b64(payload))
        except (binascii.Error, msgspec.DecodeError, ValueError):
            raise Unauthorized("The token is not valid.") from None


_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_operator(principal: Principal) -> Principal:
    if not principal.operator:
        raise Forbidden()
    return principal


def mint_token(secret: str, user_id: str, *, operator: bool = False, ttl_s: int = 3600,
               now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": user_id, "iat": issued, "exp": issued + ttl_s}
    if operator:
        claims["role"] = "operator"
    return jwt.encode(claims, secret, algorithm="HS256")
