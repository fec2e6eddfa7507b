"""Versioned schema migrations, one folder per SQL dialect: `<dialect>/NNNN_what.sql`.

A database records the versions it has applied in `schema_version`; a store applies every migration whose
version is not recorded there yet, in version order, so a migration added on a branch next to a later
one still runs. Each file is applied in one transaction with its version row."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    script: str


def load(dialect: str) -> list[Migration]:
    """Return the migrations of `dialect` ('sqlite', 'postgres') in version order; ValueError on a clash."""
    migrations: dict[int, Migration] = {}
    for path in sorted((_HERE / dialect).glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file names are NNNN_what.sql, got {path.name!r}")
        version = int(match.group(1))
        if version in migrations:
            raise ValueError(f"two {dialect} migrations have version {version}: {migrations[version].name}, {path.name}")
        migrations[version] = Migration(version, path.name, path.read_text(encoding="utf-8"))
    return [migrations[version] for version in sorted(migrations)]
