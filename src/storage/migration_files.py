"""Numbered SQL migration files, shared by the Postgres runner (:mod:`src.storage.migrate`) and SQLite.

A migration is a file named ``NNN_name.sql`` (three or more digits) in a backend's migrations
directory; files are applied in version order, each at most once, and recorded in a
``schema_migrations`` ledger. Files are append-only: a change belongs in a new numbered file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_NAME_RE = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations directory is inconsistent (duplicate version, unreadable file)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_in(directory: Path) -> list[Migration]:
    """The migrations in ``directory``, ascending by version. Raises MigrationError on a duplicate version."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME_RE.match(path.name)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version}: {found[version].name} and {path.stem}")
        try:
            sql = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MigrationError(f"cannot read {path}: {exc}") from exc
        found[version] = Migration(version=version, name=path.stem, sql=sql)
    return [found[v] for v in sorted(found)]
