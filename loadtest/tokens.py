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

    def take(self, count: int) -> list[str]:
        first, self._next = self._next, self._next + count
        return [mint_token(self._secret, f"{self._prefix}{n}", ttl_s=self._ttl)
                for n in range(first, first + count)]

    def write(self, path: Path, count: int) -> Path:
        path.write_text("\n".join(self.take(count)) + "\n")
        return path
