"""The benchmark's printed table and its JSON record."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).with_name("results")


def _num(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def median_row(name: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for a scenario measured in several rounds: the round of median req/s, with
    the median ratios, the worst p99 and the errors of all rounds."""
    ordered = sorted(rounds, key=lambda r: r["result"]["rps"])
    mid = dict(ordered[len(ordered) // 2])
    mid["result"] = dict(mid["result"])
    mid["result"]["p99_ms"] = max(r["result"]["p99_ms"] or 0 for r in rounds)
    mid["result"]["errors"] = sum(r["result"]["errors"] for r in rounds)
    for key in ("ratio_to_reference", "cpu_ratio_to_reference"):
        values = [r[key] for r in rounds if key in r]
        if values:
            mid[key] = statistics.median(values)
    mid["scenario"] = name
    mid["rounds"] = [{"rps": r["result"]["rps"], "p99_ms": r["result"]["p99_ms"],
                      "ratio_to_reference": r.get("ratio_to_reference"),
                      "cpu_ratio_to_reference": r.get("cpu_ratio_to_reference"),
                      "serve_cpu_us": r["serve_cpu_us"], "cpu_pct": r["cpu_pct"]}
                     for r in rounds]
    return mid


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no throughput scenario was run)"
    head = ["scenario", "req/s", "p50 ms", "p99 ms", "errors", "vs reference",
            "CPU/req us", "CPU vs ref", "serve CPU", "gen CPU", "other CPU", "machine CPU"]
    body = []
    for r in rows:
        res = r["result"]
        ratio = r.get("ratio_to_reference")
        cpu_ratio = r.get("cpu_ratio_to_reference")
        cpu = r["cpu_pct"]
        reference = r["scenario"] == "reference POST"
        body.append([
            r["scenario"], _num(res["rps"], 0), _num(res["p50_ms"], 2), _num(res["p99_ms"], 2),
            str(res["errors"]),
            "1.00" if reference else "-" if ratio is None else f"{ratio:.2f}",
            _num(r.get("serve_cpu_us", math.nan), 0),
            "1.00" if reference else "-" if cpu_ratio is None else f"{cpu_ratio:.2f}",
            f"{cpu['serve']:.0f}%", f"{cpu['generator']:.0f}%", f"{cpu['other']:.0f}%",
            f"{cpu['machine']:.0f}%"])
    return _grid(head, body)


def _grid(head: list[str], body: list[list[str]]) -> str:
    widths = [max([len(h), *(len(b[i]) for b in body)]) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def defences_table(rows: list[dict[str, Any]]) -> str:
    """What each defence costs: one sale per configuration, the same load on each."""
    head = ["configuration", "req/s", "p50 ms", "p99 ms", "errors", "vs no defences",
            "serve CPU", "machine CPU"]
    body = []
    for r in rows:
        res = r["result"]
        ratio = r.get("ratio_to_no_defences")
        cpu = r["cpu_pct"]
        body.append([
            r["configuration"], _num(res["rps"], 0), _num(res["p50_ms"], 2),
            _num(res["p99_ms"], 2), str(res["errors"]), "-" if ratio is None else f"{ratio:.2f}",
            f"{cpu['serve']:.0f}%", f"{cpu['machine']:.0f}%"])
    return _grid(head, body)


DEFENCES_LEGEND = (
    "Each configuration is its own sale, driven like `winning purchase` (huge stock, a new "
    "shopper per request) or,\nfor the sold-out rows, like `sold-out (409)`. The address "
    "limit is too wide to refuse (the cost of the check);\nthe token and waiting-room rows "
    "have no rate limit (a token minted per request; every shopper joined before\nthe "
    "measure, all admitted). `vs no defences` is req/s over the same path's `no defences` row.")


LEGEND = ("Each row is the median of the rounds; a ratio is to the reference measured in the "
          "same round; p99 is the worst round's.\n`CPU/req us` = the front door's CPU per "
          "answered request; `CPU vs ref` = the reference's CPU/req over the row's (the front "
          "door's\nown cost, whatever else the machine runs). "
          "CPU in % of one core over the run: serve = the front door (reference or seckill); "
          "gen = the load generator;\nother = seckill worker + Redis + RabbitMQ + "
          "PostgreSQL; machine = everything on all cores (max 100% x cores).")


def e2e_lines(e2e: dict[str, Any]) -> str:
    return "\n".join([
        f"end-to-end sale: {e2e['units']:,} units, {e2e['shoppers']:,} distinct shoppers "
        f"({e2e['result']['rps']:,.0f} req/s, p99 {_num(e2e['result']['p99_ms'], 1)} ms)",
        f"  sold out after          {_num(e2e['sell_out_s'], 3)} s"
        + ("" if e2e["sold_out"] else "  (not sold out: fewer shoppers than units)"),
        f"  every order persisted   {_num(e2e['all_persisted_s'], 3)} s after the first request"
        f" (last one {_num(e2e['persist_lag_s'], 3)} s after the last win)",
        f"  orders persisted/s      {_num(e2e['orders_persisted_per_s'], 0)}",
        f"  won {e2e['units_won']:,} <= stock {e2e['units']:,}; rows {e2e['rows']:,}; "
        f"distinct buyers {e2e['distinct_buyers']:,}; oversold {e2e['oversold']}  "
        + ("OK" if e2e["ok"] else "FAILED: " + "; ".join(e2e["problems"])),
    ])


def persistence_lines(p: dict[str, Any]) -> str:
    return (f"order persistence (worker alone, backlog of {p['orders']:,} orders in RabbitMQ): "
            f"{_num(p['drain_orders_per_s'], 0)} orders/s while writing, "
            f"{_num(p['wall_orders_per_s'], 0)} orders/s including the worker's start "
            f"({_num(p['wall_s'], 2)} s)")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def settings(args: Any) -> dict[str, Any]:
    """A run's command-line settings, as JSON can hold them."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def per_request(rows: dict[str, Any], key: str, heading: str, spec: str) -> str:
    """The table of a per-request figure by path, with the reference's over each path's."""
    ref = rows["reference POST"][key]
    width = max(len(heading) + 2, 16)
    lines = [f"{'path':<16}{heading:>{width}}{'reference/path':>16}"]
    for name, row in rows.items():
        lines.append(f"{name:<16}{row[key]:>{width}{spec}}{ref / row[key]:>16.2f}")
    return "\n".join(lines)


def finish(kind: str, args: Any, rows: dict[str, Any], table: str, legend: str) -> None:
    """Print a per-request run's table and legend; write it to `args.results_dir`."""
    print()
    print(table)
    print(legend)
    record = {"kind": kind, "machine": machine(), "settings": settings(args), "rows": rows}
    print(f"\nresults: {write(record, args.results_dir, kind)}")


def write(record: dict[str, Any], directory: Path = RESULTS_DIR, kind: str = "bench") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path
