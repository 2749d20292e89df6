"""PostgresStore against the real Postgres: the shared contract, views with known numbers, the runbook
queries verbatim, exact time conversion, error classification and concurrent writers.

Each test gets its own throw-away schema (``search_path``), so runs and tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from src.analysis.types import Signal
from src.storage.base import StoreError, StoreUnavailable, StreamQuality
from src.storage.postgres_store import PostgresStore, _ms, _ts, describe_dsn, split_dsn
from tests.storage_contract import StoreContract, delivery, make_candle, make_evidence, make_outcome, make_signal

pytestmark = pytest.mark.postgres

RUNBOOK_RECENT = (
    "SELECT * FROM v_recent_signals WHERE generated_at > NOW() - INTERVAL '24 hours' ORDER BY generated_at DESC;"
)
RUNBOOK_RECENT_CALLS = (
    "SELECT generated_at, kind, symbol, timeframe, pattern, direction, p_win, expected_r, expected_r_lo, expected_r_hi, "
    "outcome, r_multiple FROM v_recent_signals WHERE kind <> 'gated' AND generated_at > NOW() - INTERVAL '7 days' "
    "ORDER BY generated_at DESC;"
)
RUNBOOK_STATS = (
    "SELECT symbol, timeframe, pattern, graded, ROUND(mean_r::numeric, 3) AS mean_r, ROUND(ci95_lo::numeric, 3) AS ci95_lo, "
    "ROUND(ci95_hi::numeric, 3) AS ci95_hi, ROUND(win_rate_pct, 1) AS win_rate_pct FROM v_signal_stats "
    "WHERE population = 'tracked' ORDER BY graded DESC, symbol, timeframe, pattern;"
)
RUNBOOK_WIN_RATE = (
    "SELECT p.symbol_name, COUNT(*) AS graded, 100.0 * AVG(CASE WHEN p.r_multiple > 0 THEN 1 ELSE 0 END) AS net_win_rate_pct, "
    "AVG(p.r_multiple) AS mean_r FROM signal_performance p JOIN signals s ON s.id = p.signal_id WHERE s.kind = 'trade' "
    "GROUP BY p.symbol_name ORDER BY graded DESC, p.symbol_name;"
)
RUNBOOK_RELIABILITY = (
    "SELECT bucket_low, bucket_high, graded, ROUND(avg_p_win::numeric, 3) AS avg_p_win, "
    "ROUND(realised_win_rate, 3) AS realised_win_rate FROM v_reliability WHERE population = 'tracked' ORDER BY bucket_low;"
)
RUNBOOK_PRUNE = "DELETE FROM candles WHERE open_time < NOW() - INTERVAL '90 days';"


def new_schema_name() -> str:
    return f"wyeli_test_{secrets.token_hex(6)}"


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def pg_schema(postgres_url: str) -> AsyncIterator[str]:
    schema = new_schema_name()
    yield schema
    await drop_schema(postgres_url, schema)


@pytest.fixture
async def pg_store(postgres_url: str, pg_schema: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(postgres_url, schema=pg_schema)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def sql(postgres_url: str, pg_store: PostgresStore) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection that sees the test schema (for the verbatim runbook queries)."""
    conn = await asyncpg.connect(postgres_url, server_settings={"search_path": pg_store.schema or "public"})
    yield conn
    await conn.close()


class TestPostgresStoreContract(StoreContract):
    @pytest.fixture
    async def store(self, pg_store: PostgresStore) -> AsyncIterator[PostgresStore]:
        yield pg_store


# ---------------------------------------------------------------------------- views on a known data set
def _epoch_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


async def _known_data_set(store: PostgresStore) -> tuple[list[Signal], list[Signal], Signal]:
    """3 BTC 1h springs (trade WIN 2R, watch LOSS -1R, trade open), 2 ETH 4h wave3 (trade WIN 3R, gated 'cooldown'
    EXPIRED 0.2R), 1 old SOL utad (gated 'duplicate_structure' LOSS -1R). All assessed by the evidence model."""
    now = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0)
    h = 3_600_000
    recent = _epoch_ms(now - timedelta(hours=6))
    old = _epoch_ms(now - timedelta(days=3))
    kinds = (("trade", ""), ("watch", "no_edge"), ("trade", ""))
    spring = [make_signal("BTCUSDT", "1h", recent + i * h, "spring", confidence=c, kind=k, gate_reason=g,
                          evidence=make_evidence(p_win=c))
              for i, (c, (k, g)) in enumerate(zip((0.62, 0.71, 0.93), kinds, strict=True))]
    wave3 = [make_signal("ETHUSDT", "4h", recent - 4 * h * (i + 1), "wave3", "SHORT", confidence=c, kind=k, gate_reason=g,
                         evidence=make_evidence(p_win=c))
             for i, (c, (k, g)) in enumerate(zip((0.75, 0.78), (("trade", ""), ("gated", "cooldown")), strict=True))]
    utad = make_signal("SOLUSDT", "15m", old, "utad", "SHORT", confidence=0.66, kind="gated",
                       gate_reason="duplicate_structure", evidence=make_evidence(p_win=0.66))
    for s in (*spring, *wave3, utad):
        assert await store.save_signal(s)
    await store.save_outcome(make_outcome(spring[0], "WIN", 2.0))
    await store.save_outcome(make_outcome(spring[1], "LOSS", -1.0))
    await store.save_outcome(make_outcome(wave3[0], "WIN", 3.0))
    await store.save_outcome(make_outcome(wave3[1], "EXPIRED", 0.2))
    await store.save_outcome(make_outcome(utad, "LOSS", -1.0))
    return spring, wave3, utad


async def test_runbook_recent_signals_query_returns_last_24_hours_newest_first(pg_store, sql) -> None:
    spring, wave3, _ = await _known_data_set(pg_store)
    rows = await sql.fetch(RUNBOOK_RECENT)
    expected = sorted([*spring, *wave3], key=lambda s: s.generated_at, reverse=True)
    assert [r["id"] for r in rows] == [s.id for s in expected]
    first = rows[0]
    assert first["symbol"] == "BTCUSDT" and first["pattern"] == "spring" and first["outcome"] is None
    by_id = {r["id"]: r for r in rows}
    assert by_id[spring[0].id]["outcome"] == "WIN" and by_id[spring[0].id]["r_multiple"] == 2.0
    assert list(by_id[spring[0].id]["take_profits"]) == list(spring[0].take_profits)
    # 002 appended the gate's verdict and the evidence
    w = by_id[spring[1].id]
    assert (w["kind"], w["gate_reason"], w["p_win"]) == ("watch", "no_edge", 0.71)
    assert (w["expected_r"], w["expected_r_lo"], w["expected_r_hi"]) == (0.05, 0.05 - 0.2, 0.05 + 0.2)
    assert (w["backtest_n"], w["model_version"], w["interval_coverage"]) == (120, "test-1", 0.8)
    assert w["rr_to_tp1"] == pytest.approx(1.5) and w["raw_score"] == pytest.approx(0.71 - 0.05)


async def test_runbook_recent_calls_query_leaves_gated_candidates_out(pg_store, sql) -> None:
    await _known_data_set(pg_store)
    rows = await sql.fetch(RUNBOOK_RECENT_CALLS)
    assert {r["kind"] for r in rows} == {"trade", "watch"}
    assert len(rows) == 4  # 3 springs + the traded wave3; the gated wave3 and the gated utad are left out


async def test_signal_stats_view_separates_trade_calls_watch_notes_and_the_tracked_population(pg_store, sql) -> None:
    spring, _, _ = await _known_data_set(pg_store)
    rows = {(r["symbol"], r["pattern"], r["population"]): r for r in await sql.fetch("SELECT * FROM v_signal_stats")}
    assert set(rows) == {
        ("BTCUSDT", "spring", "trade"), ("BTCUSDT", "spring", "watch"), ("BTCUSDT", "spring", "tracked"),
        ("ETHUSDT", "wave3", "trade"), ("ETHUSDT", "wave3", "tracked"),
        # the SOL utad is gated as a duplicate: neither a call nor tracked
    }
    trade = rows[("BTCUSDT", "spring", "trade")]
    assert (trade["candidates"], trade["graded"], trade["mean_r"], trade["ci95_lo"]) == (2, 1, 2.0, None)
    assert float(trade["win_rate_pct"]) == 100.0 and trade["tp_first"] == 1
    tracked = rows[("BTCUSDT", "spring", "tracked")]
    assert (tracked["candidates"], tracked["graded"]) == (3, 2)
    assert tracked["mean_r"] == pytest.approx(0.5) and float(tracked["win_rate_pct"]) == pytest.approx(50.0)
    sd = (((2.0 - 0.5) ** 2 + (-1.0 - 0.5) ** 2) / 1) ** 0.5
    assert tracked["ci95_lo"] == pytest.approx(0.5 - 1.96 * sd / 2 ** 0.5)
    assert tracked["ci95_hi"] == pytest.approx(0.5 + 1.96 * sd / 2 ** 0.5)
    assert tracked["avg_p_win"] == pytest.approx((0.62 + 0.71 + 0.93) / 3)
    assert tracked["last_at"] == max(datetime.fromisoformat(s.generated_at) for s in spring)
    eth = rows[("ETHUSDT", "wave3", "tracked")]  # the 'cooldown' gated one is tracked
    assert (eth["graded"], eth["mean_r"], eth["expired"]) == (2, pytest.approx(1.6), 1)


async def test_signal_stats_view_agrees_with_the_stores_live_track(pg_store, sql) -> None:
    await _known_data_set(pg_store)
    tracked = await sql.fetchval("SELECT wyeli_tracked_gate_reasons()")
    view = {(r["pattern"], r["timeframe"], r["population"]): (r["candidates"], r["graded"], round(r["mean_r"], 9))
            for r in await sql.fetch("SELECT * FROM v_signal_stats")}  # one symbol per (pattern, timeframe) here
    store = {(t.pattern, t.timeframe, t.population): (t.candidates, t.graded, round(t.mean_r or 0.0, 9))
             for t in await pg_store.live_track(tracked)}
    assert view == store


async def test_runbook_stats_query_lists_the_tracked_track_record(pg_store, sql) -> None:
    await _known_data_set(pg_store)
    rows = await sql.fetch(RUNBOOK_STATS)
    assert [(r["symbol"], r["pattern"], r["graded"]) for r in rows] == [("BTCUSDT", "spring", 2), ("ETHUSDT", "wave3", 2)]
    assert float(rows[0]["mean_r"]) == 0.5 and float(rows[0]["win_rate_pct"]) == 50.0


async def test_runbook_win_rate_query_counts_graded_trade_calls_by_net_r(pg_store, sql) -> None:
    await _known_data_set(pg_store)
    rows = await sql.fetch(RUNBOOK_WIN_RATE)
    got = {r["symbol_name"]: (r["graded"], float(r["net_win_rate_pct"]), r["mean_r"]) for r in rows}
    assert got == {"BTCUSDT": (1, 100.0, 2.0), "ETHUSDT": (1, 100.0, 3.0)}


async def test_win_rate_view_splits_kinds_and_counts_net_wins(pg_store, sql) -> None:
    await _known_data_set(pg_store)
    view = {(r["symbol_name"], r["kind"]): r for r in await sql.fetch("SELECT * FROM v_win_rate")}
    assert set(view) == {("BTCUSDT", "trade"), ("BTCUSDT", "watch"), ("ETHUSDT", "trade"), ("ETHUSDT", "gated"),
                         ("SOLUSDT", "gated")}
    eth = view[("ETHUSDT", "gated")]
    assert (eth["graded"], eth["net_wins"], eth["tp_first"], eth["expired"]) == (1, 1, 0, 1)
    assert float(eth["net_win_rate_pct"]) == 100.0 and float(eth["tp_first_rate_pct"]) == 0.0
    assert view[("BTCUSDT", "trade")]["avg_mae"] == pytest.approx(0.25)


async def test_reliability_view_buckets_graded_candidates_by_shown_p_win(pg_store, sql) -> None:
    await _known_data_set(pg_store)
    rows = await sql.fetch(RUNBOOK_RELIABILITY)
    got = [(float(r["bucket_low"]), float(r["bucket_high"]), r["graded"], float(r["realised_win_rate"])) for r in rows]
    # tracked and graded: 0.62 (+2), 0.71 (-1), 0.75 (+3), 0.78 (+0.2); 0.66 is a duplicate, 0.93 still open
    assert got == [(0.6, 0.7, 1, 1.0), (0.7, 0.8, 3, 0.667)]  # ROUNDed to 3 places by the query
    assert float(rows[1]["avg_p_win"]) == pytest.approx(round((0.71 + 0.75 + 0.78) / 3, 3))
    trade = await sql.fetch("SELECT bucket_low, graded FROM v_reliability WHERE population = 'trade' ORDER BY 1")
    assert [(float(r[0]), r[1]) for r in trade] == [(0.6, 1), (0.7, 1)]


async def test_reliability_view_puts_p_win_one_in_the_top_bucket_and_skips_unassessed_rows(pg_store, sql) -> None:
    for i, c in enumerate((1.0, 0.9, 0.0, 0.7)):
        s = make_signal(candle_time_ms=1_700_000_000_000 + i * 3_600_000, evidence=make_evidence(p_win=c))
        await pg_store.save_signal(s)
        await pg_store.save_outcome(make_outcome(s, "WIN", 1.0))
    legacy = make_signal(candle_time_ms=1_600_000_000_000)  # stored before the evidence model: no p_win
    await pg_store.save_signal(legacy)
    await pg_store.save_outcome(make_outcome(legacy, "WIN", 1.0))
    rows = await sql.fetch("SELECT bucket_low, graded FROM v_reliability WHERE population = 'tracked' ORDER BY bucket_low")
    assert [(float(r[0]), r[1]) for r in rows] == [(0.0, 1), (0.7, 1), (0.9, 2)]


async def test_data_quality_view_shows_each_stream_with_its_counters(pg_store, sql) -> None:
    now_ms = _epoch_ms(datetime.now(tz=UTC))
    await pg_store.save_stream_quality([
        StreamQuality("BTCUSDT", "1h", now_ms - 7_200_000, 2, 30, 1, 4, now_ms),
        StreamQuality("ETHUSDT", "15m", None, 0, 0, 0, 0, now_ms),
    ])
    rows = await sql.fetch("SELECT * FROM v_data_quality ORDER BY symbol")
    assert [(r["symbol"], r["gaps_backfilled"], r["candles_backfilled"], r["stalls"], r["reconnects"]) for r in rows] == [
        ("BTCUSDT", 2, 30, 1, 4), ("ETHUSDT", 0, 0, 0, 0),
    ]
    assert timedelta(hours=2) <= rows[0]["last_candle_age"] < timedelta(hours=3)
    assert rows[1]["last_candle_time"] is None and rows[1]["last_candle_age"] is None


async def test_runbook_retention_delete_removes_candles_older_than_90_days(pg_store, sql) -> None:
    now = datetime.now(tz=UTC).replace(second=0, microsecond=0)
    old = [make_candle(i=0), make_candle(i=1)]  # 2023
    edge = _epoch_ms(now - timedelta(days=89))
    fresh = [replace(make_candle(i=i), open_time_ms=edge + i * 60_000, close_time_ms=edge + i * 60_000 + 59_999)
             for i in range(3)]
    await pg_store.upsert_candles(old + fresh)
    status = await sql.execute(RUNBOOK_PRUNE)
    assert status == "DELETE 2"
    assert await pg_store.load_candles("BTCUSDT", "1m") == fresh


async def test_rest_backend_functions_agree_with_the_store_queries(pg_store, sql) -> None:
    spring, wave3, _ = await _known_data_set(pg_store)
    await pg_store.record_delivery(delivery(spring[0], "discord:1", "sent"))
    pending = [r["id"] for r in await sql.fetch(
        "SELECT id FROM wyeli_pending_deliveries_by_kind('discord:1', ARRAY['trade', 'watch', 'gated'], 50)")]
    assert pending == [s.id for s in await pg_store.pending_deliveries("discord:1", kinds=("trade", "watch"))]
    assert set(pending) == {spring[1].id, spring[2].id, wave3[0].id}  # never a gated one
    only_trade = [r["id"] for r in await sql.fetch("SELECT id FROM wyeli_pending_deliveries_by_kind('discord:1', "
                                                   "ARRAY['trade'], 1)")]
    assert only_trade == [s.id for s in await pg_store.pending_deliveries("discord:1", limit=1)]
    opened = [r["id"] for r in await sql.fetch("SELECT id FROM wyeli_open_signals()")]
    assert opened == [s.id for s in await pg_store.open_signals()] == [spring[2].id]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rows = await sql.fetch("SELECT * FROM wyeli_last_emitted()")
    last = {(r[0], r[1], r[2]): (r[3] - epoch) // timedelta(milliseconds=1) for r in rows}
    trades = {(r[0], r[1], r[2]): (r[4] - epoch) // timedelta(milliseconds=1) for r in rows if r[4] is not None}
    seed = await pg_store.gate_seed(structure_window_ms=10**12)
    assert last == seed.last_emitted_ms and trades == seed.last_trade_ms
    assert set(last) == {("BTCUSDT", "1h", "LONG"), ("ETHUSDT", "4h", "SHORT")}


async def test_the_tracked_gate_reasons_in_sql_are_the_programs(sql) -> None:
    from src.bot.analysis_api import TRACKED_GATE_REASONS

    assert set(await sql.fetchval("SELECT wyeli_tracked_gate_reasons()")) == set(TRACKED_GATE_REASONS)


# ---------------------------------------------------------------------------- conversions and writes
async def test_epoch_ms_and_timestamptz_convert_exactly_both_ways(sql) -> None:
    rng = random.Random(7)
    values = [0, 1, -1, 999, 1_700_000_000_123, 4_102_444_799_999, -86_400_001, 253_402_300_799_999]
    values += [rng.randrange(-2_000_000_000_000, 5_000_000_000_000) for _ in range(5000)]
    rows = await sql.fetch(f"SELECT x, {_ms(_ts('x'))} AS back FROM unnest($1::bigint[]) AS t(x)", values)
    assert [r["back"] for r in rows] == values
    # and the timestamptz really is that instant
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    ts = await sql.fetchval(f"SELECT {_ts('$1::bigint')}", 1_700_000_000_123)
    assert ts == epoch + timedelta(milliseconds=1_700_000_000_123)


async def test_large_candle_batch_spans_several_statements_and_keeps_every_row(pg_store) -> None:
    # chunks of 5000, 5000 and 2345 rows: all through COPY into the stage table
    cs = [make_candle("BTCUSDT", "1m", i, price=100.0 + (i % 50)) for i in range(12_345)]
    await pg_store.upsert_candles(cs)
    assert await pg_store.load_candles("BTCUSDT", "1m") == cs
    assert await pg_store.last_open_time("BTCUSDT", "1m") == cs[-1].open_time_ms
    # 5000 rows by COPY, then 200 by the unnest statement, in one transaction; every value changed
    changed = [replace(c, close=c.close * 1.5, high=c.high * 1.5) for c in cs[:5200]]
    await pg_store.upsert_candles(changed)
    assert await pg_store.load_candles("BTCUSDT", "1m") == changed + cs[5200:]


async def test_statement_cache_off_for_the_transaction_pooler_still_reads_and_writes(postgres_url, pg_schema) -> None:
    sep = "&" if "?" in postgres_url else "?"
    store = PostgresStore(f"{postgres_url}{sep}statement_cache_size=0", schema=pg_schema)
    assert store._statement_cache_size == 0
    await store.open()
    try:
        cs = [make_candle(i=i) for i in range(700)]
        await store.upsert_candles(cs)
        await store.upsert_candles(cs[:3])
        assert await store.load_candles("BTCUSDT", "1m", limit=700) == cs
        assert await store.save_signal(make_signal()) is True
    finally:
        await store.close()


async def test_invalid_and_unclosed_candles_are_skipped_and_counted(pg_store) -> None:
    good = make_candle(i=0)
    bad = replace(make_candle(i=1), high=1.0)  # high < low
    live = replace(make_candle(i=2), closed=False)
    await pg_store.upsert_candles([good, bad, live])
    assert await pg_store.load_candles("BTCUSDT", "1m") == [good]
    assert pg_store.rejected_candles == 2


async def test_candle_writes_register_their_symbols(pg_store, sql) -> None:
    await pg_store.upsert_candles([make_candle("BTCUSDT", "1m", 0), make_candle("ETHUSDT", "1h", 0)])
    await pg_store.save_signal(make_signal("SOLUSDT"))
    assert [r[0] for r in await sql.fetch("SELECT symbol FROM symbols ORDER BY symbol")] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


async def test_two_stores_writing_the_same_rows_concurrently_converge(postgres_url, pg_store) -> None:
    other = PostgresStore(postgres_url, schema=pg_store.schema)
    await other.open()
    try:
        cs = [make_candle("BTCUSDT", "5m", i, price=50.0 + i) for i in range(2000)]
        shuffled = cs[:]
        random.Random(3).shuffle(shuffled)
        sig = make_signal()
        writes = [s.upsert_candles(b) for s in (pg_store, other) for b in (cs, shuffled, cs[500:1500])]
        saved = await asyncio.gather(*writes, pg_store.save_signal(sig), other.save_signal(sig), other.save_signal(sig))
        assert sorted(saved[-3:]) == [False, False, True]
        assert await other.load_candles("BTCUSDT", "5m") == cs
    finally:
        await other.close()


# ---------------------------------------------------------------------------- connections and errors
async def test_unreachable_server_raises_store_unavailable_and_ping_is_false(unused_tcp_port: int) -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/test", connect_timeout=2)
    with pytest.raises(StoreUnavailable):
        await store.open()
    assert await store.ping() is False
    with pytest.raises(StoreUnavailable):
        await store.upsert_candles([make_candle()])
    await store.close()


async def test_unknown_database_is_a_permanent_store_error_not_unavailable(postgres_url: str) -> None:
    dsn = postgres_url.rsplit("/", 1)[0] + "/wyeli_no_such_db_" + secrets.token_hex(3)
    store = PostgresStore(dsn)
    with pytest.raises(StoreError) as info:
        await store.open()
    assert not isinstance(info.value, StoreUnavailable)


async def test_closed_store_refuses_calls(pg_store) -> None:
    await pg_store.close()
    with pytest.raises(StoreError):
        await pg_store.load_candles("BTCUSDT", "1m")


def test_transaction_pooler_port_disables_the_statement_cache() -> None:
    pooled = PostgresStore("postgresql://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres")
    session = PostgresStore("postgresql://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres")
    explicit = PostgresStore("postgresql://u:pw@db.example.com:5432/postgres?statement_cache_size=0&sslmode=require")
    assert pooled._statement_cache_size == 0
    assert session._statement_cache_size == 100
    assert explicit._statement_cache_size == 0
    assert "pw" not in pooled.name and "postgres.ref" not in pooled.name


def test_dsn_helpers_strip_our_option_and_hide_credentials() -> None:
    dsn, cache = split_dsn("postgresql://u:secret@h:5433/db?sslmode=require&statement_cache_size=0")
    assert cache == 0 and "statement_cache_size" not in dsn and "sslmode=require" in dsn
    assert split_dsn("postgresql://h/db") == ("postgresql://h/db", None)
    with pytest.raises(StoreError):
        split_dsn("postgresql://h/db?statement_cache_size=lots")
    assert describe_dsn("postgresql://u:secret@h:5433/db") == "postgres:h:5433/db"


def test_invalid_schema_name_is_refused() -> None:
    with pytest.raises(StoreError):
        PostgresStore("postgresql://h/db", schema='x"; DROP TABLE candles; --')


async def test_non_finite_feature_is_stored_as_null_and_read_back_as_nan(pg_store) -> None:
    s = replace(make_signal(), features=(("ratio", float("inf")), ("score", 0.5)))
    assert await pg_store.save_signal(s) is True
    got = await pg_store.get_signal(s.id)
    assert got is not None and got.features[1] == ("score", 0.5)
    assert got.features[0][0] == "ratio" and got.features[0][1] != got.features[0][1]  # NaN


async def test_constraint_violation_is_a_permanent_error_the_spool_can_dead_letter(pg_store) -> None:
    with pytest.raises(StoreError, match="ForeignKeyViolation") as info:
        await pg_store.save_outcome(make_outcome(make_signal(), "WIN", 1.0))  # no such signal
    assert not isinstance(info.value, StoreUnavailable)
    assert await pg_store.ping() is True  # the pool is fine afterwards


async def test_a_statement_timeout_on_a_busy_database_is_unavailable_not_permanent(
    postgres_url: str, pg_store: PostgresStore, sql: asyncpg.Connection
) -> None:
    # Supabase and many hosted servers set statement_timeout; a write cancelled by it (SQLSTATE 57014) must be
    # retried from the spool like any outage, not dead-lettered as if the data were bad.
    sep = "&" if "?" in postgres_url else "?"
    slow = PostgresStore(f"{postgres_url}{sep}statement_timeout=200", schema=pg_store.schema, migrate=False)
    await slow.open()
    try:
        async with sql.transaction():
            await sql.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")  # a long maintenance job
            with pytest.raises(StoreUnavailable, match="QueryCanceled"):
                await slow.upsert_candles([make_candle()])
        await slow.upsert_candles([make_candle()])  # fine once the database is free again
        assert await slow.load_candles(make_candle().symbol, make_candle().timeframe) == [make_candle()]
    finally:
        await slow.close()


def test_the_runbook_shows_the_tested_queries_verbatim() -> None:
    from pathlib import Path

    runbook = (Path(__file__).resolve().parent.parent / "RUNBOOK.md").read_text()
    for query in (RUNBOOK_RECENT, RUNBOOK_RECENT_CALLS, RUNBOOK_STATS, RUNBOOK_WIN_RATE, RUNBOOK_RELIABILITY, RUNBOOK_PRUNE):
        assert query in runbook, query


# ---------------------------------------------------------------------------- one refused row, not the batch
async def test_a_row_postgres_refuses_for_an_unforeseen_reason_drops_only_that_row(pg_store: PostgresStore) -> None:
    # a NUL byte is valid in a Python str and in SQLite, but Postgres text refuses it: the batch statement
    # fails as a whole, the store writes the candles one by one and drops only the refused one
    good = [make_candle(i=i) for i in range(3)]
    bad = replace(make_candle(i=5), symbol="BAD\x00USDT")
    before = pg_store.rejected_candles
    await pg_store.upsert_candles([good[0], bad, good[1], good[2]])
    assert await pg_store.load_candles("BTCUSDT", "1m") == good
    assert pg_store.rejected_candles - before == 1


# ---------------------------------------------------------------------------- the REST backend's SQL functions (003)
async def test_the_rest_commit_function_is_one_transaction_with_forward_only_watermarks(
    pg_store: PostgresStore, sql: asyncpg.Connection
) -> None:
    import json

    from src.storage.rest_times import ms_to_ts
    from src.storage.supabase_store import signal_row
    from tests.storage_contract import T0

    a, b = make_signal(pattern="spring"), make_signal(pattern="sos")
    mark = [{"symbol": "BTCUSDT", "timeframe": "1h", "analysed_to": ms_to_ts(T0 + 3_600_000)}]
    call = "SELECT wyeli_commit_analysis($1::json, $2::json)"
    assert await sql.fetchval(call, json.dumps([signal_row(a), signal_row(b)]), json.dumps(mark)) == 2
    assert await pg_store.get_signal(a.id) == a and await pg_store.get_signal(b.id) == b
    assert await pg_store.analysed_up_to("BTCUSDT", "1h") == T0 + 3_600_000
    older = [{**mark[0], "analysed_to": ms_to_ts(T0)}]
    assert await sql.fetchval(call, json.dumps([signal_row(a)]), json.dumps(older)) == 0  # known id, older mark
    assert await pg_store.analysed_up_to("BTCUSDT", "1h") == T0 + 3_600_000
    # one refused row refuses the whole commit: neither its signals nor its watermark land
    c = make_signal(pattern="lps")
    bad = {**signal_row(make_signal(pattern="utad")), "direction": "SIDEWAYS"}
    later = [{**mark[0], "analysed_to": ms_to_ts(T0 + 7_200_000)}]
    with pytest.raises(asyncpg.CheckViolationError):
        await sql.fetchval(call, json.dumps([signal_row(c), bad]), json.dumps(later))
    assert await pg_store.get_signal(c.id) is None
    assert await pg_store.analysed_up_to("BTCUSDT", "1h") == T0 + 3_600_000
    await pg_store.upsert_candles([make_candle(i=i) for i in range(5)])
    assert await sql.fetchval("SELECT wyeli_drop_candles_after('BTCUSDT', '1m', $1::timestamptz)",
                              datetime.fromtimestamp((T0 + 2 * 60_000) / 1000, tz=UTC)) == 2
