"""Bearer tokens: HS256 JWTs verified without a database, with a cache of verified tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from seckill.errors import Forbidden, Unauthorized

MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    operator: bool


class TokenVerifier:
    """Verifies tokens once; a verified token is cached until its `exp` (plus leeway)."""

    def __init__(self, secret: str, *, leeway_s: int = 30, cache_size: int = 200_000) -> None:
        self._secret = secret
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
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], leeway=self._leeway,
                                options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The token is not valid.") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 1 <= len(sub) <= 64:
            raise Unauthorized("The token's subject must be a user id of 1 to 64 characters.")
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            raise Unauthorized("The token's expiry is not a number.")
        principal = Principal(sub, claims.get("role") == "operator")
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = (principal, float(exp) + self._leeway)
        return principal


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
