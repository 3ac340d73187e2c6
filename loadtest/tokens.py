"""Shoppers' bearer tokens, minted up front (the generators cannot sign), one per line."""

from __future__ import annotations

from pathlib import Path

from seckill.auth import mint_token


class TokenBook:
    """Hands out disjoint ranges of distinct shoppers, `<prefix><n>`, and their tokens."""

    def __init__(self, secret: str, prefix: str, *, ttl_s: int = 4 * 3600) -> None:
        self._secret = secret
        self._prefix = prefix
        self._ttl = ttl_s
        self._next = 0

    def take_users(self, count: int) -> list[tuple[str, str]]:
        """`count` new shoppers: (user id, bearer token) each."""
        first, self._next = self._next, self._next + count
        users = [f"{self._prefix}{n}" for n in range(first, first + count)]
        return [(user, mint_token(self._secret, user, ttl_s=self._ttl)) for user in users]

    def take(self, count: int) -> list[str]:
        return [token for _, token in self.take_users(count)]

    def write(self, path: Path, count: int) -> Path:
        path.write_text("\n".join(self.take(count)) + "\n")
        return path

    def write_users(self, path: Path, count: int) -> list[str]:
        """Like `write`; returns the shoppers' ids, in the file's order."""
        pairs = self.take_users(count)
        path.write_text("\n".join(token for _, token in pairs) + "\n")
        return [user for user, _ in pairs]
