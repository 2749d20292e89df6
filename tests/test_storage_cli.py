"""``python -m src.storage spool``: the RUNBOOK's spool check works for every set-up, SQLite (no spool) included,
and never creates a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.storage import __main__ as storage_cli
from src.storage.base import StoreUnavailable
from src.storage.spool import SpoolStore
from src.storage.sqlite_store import SqliteStore
from tests.storage_contract import make_candle


def test_the_spool_check_on_the_default_sqlite_set_up_explains_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for k in ("DATABASE_URL", "SUPABASE_URL", "SPOOL_PATH"):
        monkeypatch.delenv(k, raising=False)
    assert storage_cli.main(["spool", "--no-env-file"]) == 0
    out = capsys.readouterr().out
    assert "nothing is waiting" in out and "SQLite" in out
    assert not (tmp_path / "data").exists()  # no empty spool file left behind


async def test_the_spool_check_counts_pending_writes_and_lists_dead_letters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class Down(SqliteStore):
        async def upsert_candles(self, candles: object) -> None:
            raise StoreUnavailable("down")

    spool_path = tmp_path / "spool.db"
    spool = SpoolStore(Down(tmp_path / "p.db"), spool_path, autoflush=False)
    await spool.open()
    await spool.upsert_candles([make_candle(i=0)])
    await spool.upsert_candles([make_candle(i=1)])
    await spool.close()
    monkeypatch.setenv("SPOOL_PATH", str(spool_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/db")
    assert storage_cli.main(["spool", "--no-env-file", "--dead-letters"]) == 0
    out = capsys.readouterr().out
    assert "pending: 2" in out and "dead letters: 0" in out
