"""What a load generator is asked to do (a Plan) and what it reports (a RunResult).

Request number i of a plan uses template `i % len(templates)` and, when the template needs
one, bearer token number `i` of the token file: every request is a different shopper until
the tokens run out (then they are reused, and the result counts the reuses as `wrapped`).
A template with a `header` also sends that header with line `i` of the plan's `values_file`
(e.g. a `Purchase-Token` minted for shopper `i`): one value per shopper, in token order.
Both generators, wrk and the built-in one, follow exactly this rule.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PURCHASE_BODY = '{"quantity":1}'


@dataclass(frozen=True, slots=True)
class Template:
    method: str
    path: str
    body: str = ""
    auth: bool = False
    # When set: the name of a header whose value, for request i, is line i of values_file.
    header: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    base_url: str
    templates: tuple[Template, ...]
    tokens_file: Path
    expected: frozenset[int]
    connections: int = 64
    duration_s: float = 10.0
    # When set: stop after this many requests (one per token); duration_s is then a bound.
    limit: int | None = None
    request_timeout_s: float = 10.0
    # One value a line, for the templates that name a `header` (line i: request i).
    values_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://127.", "http://localhost")):
            raise ValueError(f"load is only ever sent to this machine, not {self.base_url}")
        if self.values_file is None and any(t.header for t in self.templates):
            raise ValueError("a template sends a per-request header: the plan needs values_file")

    def to_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "templates": [[t.method, t.path, t.body, t.auth, t.header]
                          for t in self.templates],
            "tokens_file": str(self.tokens_file), "expected": sorted(self.expected),
            "connections": self.connections, "duration_s": self.duration_s,
            "limit": self.limit, "request_timeout_s": self.request_timeout_s,
            "values_file": None if self.values_file is None else str(self.values_file),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        return cls(
            base_url=d["base_url"],
            templates=tuple(Template(m, p, b, bool(a), h) for m, p, b, a, h in d["templates"]),
            tokens_file=Path(d["tokens_file"]), expected=frozenset(d["expected"]),
            connections=d["connections"], duration_s=d["duration_s"], limit=d["limit"],
            request_timeout_s=d["request_timeout_s"],
            values_file=Path(d["values_file"]) if d.get("values_file") else None)


class Histogram:
    """Latencies in buckets 1% wide (log scale from 1 µs): mergeable, percentiles within 1%."""

    _BASE = math.log(1.01)

    def __init__(self, buckets: dict[int, int] | None = None) -> None:
        self.buckets: Counter[int] = Counter(buckets or {})

    def record(self, seconds: float) -> None:
        us = seconds * 1e6
        self.buckets[int(math.log(us) / self._BASE) if us > 1 else 0] += 1

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)

    @property
    def count(self) -> int:
        return sum(self.buckets.values())

    def percentile_ms(self, q: float) -> float:
        total = self.count
        if total == 0:
            return math.nan
        rank = math.ceil(total * q / 100)
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return math.exp((bucket + 0.5) * self._BASE) / 1000
        return math.nan

    def to_json(self) -> dict[str, int]:
        return {str(k): v for k, v in self.buckets.items()}

    @classmethod
    def from_json(cls, d: dict[str, int]) -> Histogram:
        return cls({int(k): v for k, v in d.items()})


@dataclass(slots=True)
class RunResult:
    generator: str
    responses: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    socket_errors: dict[str, int] = field(default_factory=dict)
    wrapped: int = 0
    generator_cpu_s: float = 0.0
    expected: frozenset[int] = frozenset()

    @property
    def rps(self) -> float:
        return self.responses / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def errors(self) -> int:
        """Answers with an unexpected status, plus requests that got no answer at all."""
        unexpected = sum(n for s, n in self.statuses.items() if s not in self.expected)
        return unexpected + sum(self.socket_errors.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "generator": self.generator, "responses": self.responses,
            "elapsed_s": round(self.elapsed_s, 3), "rps": round(self.rps, 1),
            "p50_ms": _round(self.p50_ms), "p99_ms": _round(self.p99_ms),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "socket_errors": self.socket_errors, "errors": self.errors,
            "tokens_reused": self.wrapped, "generator_cpu_s": round(self.generator_cpu_s, 2),
        }


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def write_templates(path: Path, templates: tuple[Template, ...]) -> None:
    """One template a line for wrk's Lua: METHOD, PATH, AUTH (0/1), BODY, HEADER (the name of
    the per-request header, or empty), tab-separated."""
    if any("\t" in f or "\n" in f for t in templates for f in (t.path, t.body, t.header)):
        raise ValueError("a template field holds a tab or a newline")
    lines = [f"{t.method}\t{t.path}\t{int(t.auth)}\t{t.body}\t{t.header}" for t in templates]
    path.write_text("\n".join(lines) + "\n")


def dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
