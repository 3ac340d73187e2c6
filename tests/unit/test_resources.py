"""Files shipped beside the code: named queries, Lua scripts and migrations."""

from __future__ import annotations

import re
from importlib import resources as importlib_resources
from pathlib import Path

import pytest

from seckill.resources import lua_source, migration_files, queries

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["orders", "sales"])
def test_every_named_query_is_parsed_once(module: str) -> None:
    text = (importlib_resources.files("seckill") / "sql" / f"{module}.sql").read_text()
    names = re.findall(r"^--\s*name:\s*(\w+)\s*$", text, re.MULTILINE)
    parsed = queries(module)
    assert sorted(parsed) == sorted(names)
    assert len(set(names)) == len(names), "a query name is used twice"
    for name, sql in parsed.items():
        assert sql and not sql.endswith(";"), name
        assert "-- name:" not in sql, name
        assert re.match(r"^(SELECT|INSERT|UPDATE|DELETE|WITH)\b", sql), name
    assert queries(module) is parsed


def test_queries_the_code_uses_exist() -> None:
    code = "\n".join(p.read_text() for p in (REPO / "seckill").rglob("*.py"))
    code += "\n".join(p.read_text() for p in (REPO / "workers").rglob("*.py"))
    used = set(re.findall(r"\bQ\[\"(\w+)\"\]", code))
    known = set(queries("orders")) | set(queries("sales"))
    assert used, "no query lookups found"
    assert used <= known, used - known


def test_every_lua_script_loads_and_documents_itself() -> None:
    names = sorted(p.stem for p in (REPO / "lua").glob("*.lua"))
    assert {"purchase", "release", "load_sale"} <= set(names)
    for name in names:
        source = lua_source(name)
        assert source.startswith(f"-- {name}.lua"), name
        assert "KEYS[1]" in source, name


def test_migrations_are_ordered_and_numbered() -> None:
    found = migration_files()
    versions = [v for v, _ in found]
    assert versions[0] == "0001_core"
    assert versions == sorted(versions)
    numbers = [v.split("_", 1)[0] for v in versions]
    assert all(re.fullmatch(r"\d{4}", n) for n in numbers), versions
    assert len(set(numbers)) == len(numbers), versions
    assert all(sql.strip() for _, sql in found)
