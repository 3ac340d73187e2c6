"""Read the files shipped beside the code: `lua/`, `migrations/` and the named SQL queries.

An installed wheel carries `lua/` and `migrations/` inside the `seckill` package; a source
checkout keeps them at the top of the repository. Both are found the same way.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _dir(name: str) -> Traversable:
    packaged = resources.files("seckill") / name
    if packaged.is_dir():
        return packaged
    return _REPO_ROOT / name


def lua_source(name: str) -> str:
    return (_dir("lua") / f"{name}.lua").read_text(encoding="utf-8")


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every migration, in order; version is the file name without `.sql`."""
    found = [f for f in _dir("migrations").iterdir() if f.name.endswith(".sql")]
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8"))
            for f in sorted(found, key=lambda f: f.name)]


_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def queries(module: str) -> dict[str, str]:
    """Named queries of `seckill/sql/<module>.sql`, split on `-- name: <query>` lines."""
    text = (resources.files("seckill") / "sql" / f"{module}.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2],
                                                                  strict=True)}
