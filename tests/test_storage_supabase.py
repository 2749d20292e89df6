"""SupabaseRestStore against the local fake PostgREST (tests/fakes/postgrest.py): the shared contract
through the real supabase-py client, the exact requests, key checks, batching, paging past the row
cap, retries and the outage spool. No Supabase server is involved: this path is contract-tested only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from src.storage.base import StoreError, StoreUnavailable
from src.storage.rest_times import ms_to_ts, ts_to_ms
from src.storage.spool import SpoolStore
from src.storage.supabase_store import (
    SupabaseRestStore,
    check_write_key,
    key_role,
)
from tests.fakes.postgrest import FakePostgrest, format_ts
from tests.storage_contract import T0, StoreContract, delivery, make_candle, make_outcome, make_signal


def jwt(role: str) -> str:
    """A Supabase-style legacy key (HS256 JWT; the signature is never checked by the store)."""
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'iss': 'supabase', 'ref': 'abcdefgh', 'role': role})}.c2ln"


SERVICE_KEY = jwt("service_role")
CANDLE_COLUMNS = {"symbol", "timeframe", "open_time", "close_time", "open", "high", "low", "close", "volume",
                  "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume"}


@pytest.fixture
async def fake() -> AsyncIterator[FakePostgrest]:
    server = FakePostgrest(key=SERVICE_KEY)
    await server.start()
    yield server
    await server.stop()


def make_store(fake: FakePostgrest, **kw: object) -> SupabaseRestStore:
    opts: dict[str, object] = {"retry_initial": 0.001, "retry_max": 0.004, "timeout": 5.0}
    opts.update(kw)
    return SupabaseRestStore(fake.url, fake.key, **opts)  # type: ignore[arg-type]


@pytest.fixture
async def rest_store(fake: FakePostgrest) -> AsyncIterator[SupabaseRestStore]:
    store = make_store(fake)
    await store.open()
    yield store
    await store.close()


class TestSupabaseRestStoreContract(StoreContract):
    @pytest.fixture
    async def store(self, rest_store: SupabaseRestStore) -> AsyncIterator[SupabaseRestStore]:
        yield rest_store


# ---------------------------------------------------------------------------- keys
def test_service_role_and_secret_keys_may_write() -> None:
    assert check_write_key(SERVICE_KEY) == "service_role"
    assert check_write_key("sb_secret_" + "x" * 32) == "secret"


@pytest.mark.parametrize("key,role", [(jwt("anon"), "anon"), (jwt("authenticated"), "authenticated"),
                                      ("sb_publishable_" + "p" * 32, "publishable")])
def test_keys_that_cannot_write_are_refused_with_a_clear_message(key: str, role: str) -> None:
    assert key_role(key) == role
    with pytest.raises(StoreError) as info:
        SupabaseRestStore("https://abcdefgh.supabase.co", key)
    text = str(info.value)
    assert role in text and "sb_secret_" in text and "service_role" in text
    assert key not in text


@pytest.mark.parametrize("key", ["", "hunter2", "a.b.c", "x.eyJub3RfYV9yb2xlIjogMX0.y"])
def test_something_that_is_not_a_supabase_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(StoreError, match="not a Supabase API key") as info:
        SupabaseRestStore("https://abcdefgh.supabase.co", key)
    assert not key or key not in str(info.value)


def test_bad_url_and_batch_size_are_refused() -> None:
    with pytest.raises(StoreError, match="SUPABASE_URL"):
        SupabaseRestStore("abcdefgh.supabase.co", SERVICE_KEY)
    with pytest.raises(StoreError, match="batch_rows"):
        SupabaseRestStore("https://abcdefgh.supabase.co", SERVICE_KEY, batch_rows=1001)


# ---------------------------------------------------------------------------- exact requests
async def test_candle_upsert_sends_one_minimal_merge_request_on_the_natural_key(fake, rest_store) -> None:
    cs = [make_candle(i=i) for i in range(3)]
    fake.requests.clear()
    await rest_store.upsert_candles(cs)
    posts = [r for r in fake.requests if r.method == "POST"]
    symbols, candles = posts
    assert symbols.path == "/rest/v1/symbols" and symbols.body == [{"symbol": "BTCUSDT"}]
    assert "resolution=ignore-duplicates" in symbols.headers["prefer"]
    assert candles.path == "/rest/v1/candles"
    assert candles.param("on_conflict") == "symbol,timeframe,open_time"
    assert {c.strip('"') for c in (candles.param("columns") or "").split(",")} == CANDLE_COLUMNS
    assert set(candles.headers["prefer"].split(",")) == {"return=minimal", "resolution=merge-duplicates"}
    assert candles.headers["apikey"] == SERVICE_KEY
    assert candles.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    assert candles.headers["content-profile"] == "public"
    assert candles.headers["content-type"] == "application/json"
    assert candles.body[0] == {
        "symbol": "BTCUSDT", "timeframe": "1m", "open_time": "2023-11-14T22:00:00.000+00:00",
        "close_time": "2023-11-14T22:00:59.999+00:00", "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.49999999999999,
        "volume": 10.0, "quote_volume": 1000.0, "trades": 7, "taker_buy_volume": 5.0, "taker_buy_quote_volume": 500.0,
    }
    fake.requests.clear()
    await rest_store.upsert_candles([make_candle(i=5)])
    assert [r.path for r in fake.requests] == ["/rest/v1/candles"]  # the symbol is known now


async def test_candle_batches_are_at_most_1000_rows_and_deduplicated(fake, rest_store) -> None:
    cs = [make_candle(i=i) for i in range(2500)]
    fake.requests.clear()
    await rest_store.upsert_candles([*cs, replace(cs[0], close=cs[0].close * 1.001)])
    sizes = [len(r.body) for r in fake.requests if r.path == "/rest/v1/candles"]
    assert sizes == [1000, 1000, 500]
    assert len(fake.rows("candles")) == 2500
    assert (await rest_store.load_candles("BTCUSDT", "1m", limit=2500))[0].close == cs[0].close * 1.001


async def test_save_signal_asks_for_the_inserted_row_to_know_it_was_new(fake, rest_store) -> None:
    s = make_signal()
    fake.requests.clear()
    assert await rest_store.save_signal(s) is True
    post = next(r for r in fake.requests if r.path == "/rest/v1/signals")
    assert post.param("on_conflict") == "id"
    assert set(post.headers["prefer"].split(",")) == {"return=representation", "resolution=ignore-duplicates"}
    assert post.body[0]["features"] == {"volume_ratio": 2.1, "close_position": 0.8}
    assert post.body[0]["generated_at"] == "2023-11-14T22:59:59.999+00:00"
    assert await rest_store.save_signal(s) is False


async def test_reads_use_filters_order_and_limit(fake, rest_store) -> None:
    await rest_store.upsert_candles([make_candle(i=i) for i in range(5)])
    fake.requests.clear()
    await rest_store.load_candles("BTCUSDT", "1m", start_ms=T0, end_ms=T0 + 120_000, limit=2)
    get = fake.requests[0]
    assert get.method == "GET" and get.path == "/rest/v1/candles"
    q = get.query
    assert ("symbol", "eq.BTCUSDT") in q and ("timeframe", "eq.1m") in q
    assert ("open_time", "gte.2023-11-14T22:00:00.000+00:00") in q
    assert ("open_time", "lte.2023-11-14T22:02:00.000+00:00") in q
    assert get.param("order") == "open_time.desc" and get.param("limit") == "2"
    assert get.headers["accept-profile"] == "public"


async def test_prune_deletes_with_an_exact_count(fake, rest_store) -> None:
    await rest_store.upsert_candles([make_candle(i=i) for i in range(5)])
    fake.requests.clear()
    assert await rest_store.prune_candles(T0 + 3 * 60_000) == 3
    delete = fake.requests[0]
    assert delete.method == "DELETE" and ("open_time", "lt.2023-11-14T22:03:00.000+00:00") in delete.query
    assert "count=exact" in delete.headers["prefer"]


async def test_outbox_and_outcome_queries_go_through_the_sql_functions(fake, rest_store) -> None:
    s = make_signal()
    await rest_store.save_signal(s)
    fake.requests.clear()
    assert await rest_store.pending_deliveries("discord:1", limit=10) == [s]
    assert await rest_store.open_signals() == [s]
    paths = {r.path for r in fake.requests}
    assert {"/rest/v1/rpc/wyeli_pending_deliveries_by_kind", "/rest/v1/rpc/wyeli_open_signals"} == paths
    call = next(r for r in fake.requests if r.path.endswith("wyeli_pending_deliveries_by_kind"))
    assert call.body == {"p_destination": "discord:1", "p_kinds": ["trade"], "p_limit": 10}


async def test_gate_seed_and_live_track_go_through_the_002_functions(fake, rest_store) -> None:
    await rest_store.save_signal(make_signal(kind="watch", gate_reason="no_edge", structure_id="s1"))
    fake.requests.clear()
    seed = await rest_store.gate_seed(structure_window_ms=86_400_000)
    assert seed.structures == {"s1": "watch"} and seed.last_emitted_ms == {("BTCUSDT", "1h", "LONG"): T0}
    await rest_store.live_track({"no_edge", ""}, symbol="BTCUSDT")
    calls = {r.path: r.body for r in fake.requests}
    assert seed.judged_until_ms == {("BTCUSDT", "1h"): T0} and seed.last_trade_ms == {}
    assert calls == {
        "/rest/v1/rpc/wyeli_last_emitted": {},
        "/rest/v1/rpc/wyeli_recent_structures": {"p_window_ms": 86_400_000},
        "/rest/v1/rpc/wyeli_last_signal_times": {},
        "/rest/v1/rpc/wyeli_live_track": {"p_tracked": ["", "no_edge"], "p_symbol": "BTCUSDT", "p_timeframe": None,
                                          "p_pattern": None, "p_resolved_before": None},
    }


async def test_recent_signals_by_kind_use_an_in_filter(fake, rest_store) -> None:
    await rest_store.save_signal(make_signal(kind="gated", gate_reason="cooldown"))
    fake.requests.clear()
    assert await rest_store.recent_signals(kinds=("watch", "trade")) == []
    assert ("kind", "in.(trade,watch)") in fake.requests[0].query


async def test_a_schema_without_migration_002_is_reported_with_the_file_to_paste(fake) -> None:
    del fake.tables["schema_migrations"][(2,)]
    del fake.tables["schema_migrations"][(5,)]
    store = make_store(fake)
    missing = (r"schema is incomplete; paste these files .* in order: "
               r"002_signal_kinds_and_evidence\.sql, 005_discord_community\.sql$")
    with pytest.raises(StoreError, match=missing) as info:
        await store.open()
    assert not isinstance(info.value, StoreUnavailable)


async def test_a_file_skipped_between_pasted_ones_is_reported_too(fake) -> None:
    del fake.tables["schema_migrations"][(2,)]  # 005 pasted, 002 forgotten
    with pytest.raises(StoreError, match=r"in order: 002_signal_kinds_and_evidence\.sql$"):
        await make_store(fake).open()


# ---------------------------------------------------------------------------- paging past the row cap
async def test_reads_page_past_the_server_row_cap(fake) -> None:
    fake.max_rows = 100
    store = make_store(fake, page_rows=1000)
    await store.open()
    try:
        cs = [make_candle(i=i, price=100.0 + i) for i in range(250)]
        await store.upsert_candles(cs)
        assert await store.load_candles("BTCUSDT", "1m") == cs
        assert await store.load_candles("BTCUSDT", "1m", limit=230) == cs[20:]
        sigs = [make_signal(candle_time_ms=T0 + i * 3_600_000) for i in range(130)]
        for s in sigs:
            await store.save_signal(s)
        assert await store.open_signals() == sigs
        assert len(await store.recent_signals(limit=120)) == 120
        assert len(await store.pending_deliveries("x", limit=110)) == 110
    finally:
        await store.close()


# ---------------------------------------------------------------------------- retries and errors
async def test_transient_errors_are_retried_with_the_same_request(fake, rest_store) -> None:
    s = make_signal()
    await rest_store.save_signal(s)
    fake.fail_next(1, 503, "<html>upstream unavailable</html>")
    fake.fail_next(1, 429, {"message": "API rate limit exceeded"})
    fake.fail_next(1, 503, {"code": "PGRST001", "message": "Database client error. Retrying the connection."})
    fake.requests.clear()
    await rest_store.record_delivery(delivery(s, "discord:1", "sent", message_id="9"))
    bodies = [r.body for r in fake.requests if r.path == "/rest/v1/signal_deliveries"]
    assert len(bodies) == 4 and all(b == bodies[0] for b in bodies)
    got = await rest_store.get_delivery(s.id, "discord:1")
    assert got is not None and got.message_id == "9"


async def test_persistent_outage_raises_store_unavailable(fake) -> None:
    store = make_store(fake, max_attempts=3)
    await store.open()
    try:
        fake.fail_next(3, 503)
        with pytest.raises(StoreUnavailable, match="after 3 attempts"):
            await store.upsert_candles([make_candle()])
        await fake.stop()
        with pytest.raises(StoreUnavailable):
            await store.load_candles("BTCUSDT", "1m")
        assert await store.ping() is False
    finally:
        await store.close()


async def test_constraint_errors_are_permanent_and_not_retried(fake, rest_store) -> None:
    fake.requests.clear()
    with pytest.raises(StoreError) as info:
        await rest_store.save_outcome(make_outcome(make_signal(), "WIN", 1.0))  # no such signal: FK violation
    assert not isinstance(info.value, StoreUnavailable)
    assert "23503" in str(info.value)
    assert len([r for r in fake.requests if r.path == "/rest/v1/signal_performance"]) == 1


async def test_refused_credentials_name_the_key_variable_without_the_key(fake, rest_store) -> None:
    fake.fail_next(1, 401, {"code": "42501", "message": "permission denied for table candles"})
    with pytest.raises(StoreError) as info:
        await rest_store.upsert_candles([make_candle()])
    assert "SUPABASE_SERVICE_KEY" in str(info.value) and SERVICE_KEY not in str(info.value)


async def test_missing_schema_is_reported_with_the_fix(fake) -> None:
    fake.hidden_tables.add("schema_migrations")
    store = make_store(fake)
    with pytest.raises(StoreError, match=r"001_create_schema\.sql") as info:
        await store.open()
    assert not isinstance(info.value, StoreUnavailable)


async def test_a_schema_without_a_later_migration_names_the_file_to_run(fake) -> None:
    del fake.tables["schema_migrations"][(3,)]  # 001 was pasted, 003 (analysis watermarks) was not
    store = make_store(fake)
    with pytest.raises(StoreError, match=r"003_analysis_watermarks\.sql") as info:
        await store.open()
    assert not isinstance(info.value, StoreUnavailable)


async def test_retries_are_logged_without_the_key(fake, rest_store) -> None:
    fake.fail_next(1, 503)
    with capture_logs() as logs:
        await rest_store.upsert_candles([make_candle()])
    assert any(e["event"] == "supabase_retry" for e in logs)
    assert SERVICE_KEY not in repr(logs)


async def test_store_opened_during_an_outage_opens_itself_later(fake) -> None:
    store = make_store(fake, max_attempts=2)
    fake.fail_next(2, 502)
    with pytest.raises(StoreUnavailable):
        await store.open()
    await store.upsert_candles([make_candle()])  # opens now
    assert len(fake.rows("candles")) == 1
    await store.close()


async def test_outage_writes_are_spooled_and_replayed_in_order(fake, tmp_path: Path) -> None:
    primary = make_store(fake, max_attempts=2)
    store = SpoolStore(primary, tmp_path / "spool.db", autoflush=False)
    await store.open()
    try:
        s = make_signal()
        await store.save_signal(s)
        fake.fail_next(100, 503)
        await store.upsert_candles([make_candle(i=0, price=100.0)])
        await store.upsert_candles([make_candle(i=0, price=200.0)])
        await store.record_delivery(delivery(s, "discord:1", "failed", error="down"))
        await store.record_delivery(delivery(s, "discord:1", "sent", message_id="7", attempts=2))
        assert store.depth == 4
        fake.failures.clear()
        assert await store.flush() == 4
        assert await store.load_candles("BTCUSDT", "1m") == [make_candle(i=0, price=200.0)]
        got = await store.get_delivery(s.id, "discord:1")
        assert got is not None and got.status == "sent"
    finally:
        await store.close()


# ---------------------------------------------------------------------------- time conversion
@given(st.integers(min_value=-2_000_000_000_000, max_value=4_000_000_000_000))
def test_epoch_ms_survive_the_iso_round_trip_in_both_text_forms(ms: int) -> None:
    assert ts_to_ms(ms_to_ts(ms)) == ms
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert ts_to_ms(format_ts(dt)) == ms  # Postgres's form: trimmed fraction, '+00:00'
    assert ts_to_ms(format_ts(dt).replace("+00:00", "Z")) == ms


async def test_non_finite_feature_is_sent_as_null_and_read_back_as_nan(fake, rest_store) -> None:
    s = replace(make_signal(), features=(("ratio", float("nan")), ("score", 0.5)))
    assert await rest_store.save_signal(s) is True
    assert next(r for r in fake.requests if r.path == "/rest/v1/signals").body[0]["features"] == {"ratio": None,
                                                                                                  "score": 0.5}
    got = await rest_store.get_signal(s.id)
    assert got is not None and got.features[1] == ("score", 0.5) and got.features[0][1] != got.features[0][1]


async def test_reads_during_an_open_that_fails_are_unavailable_never_a_closed_client_error() -> None:
    # Supabase unreachable at start: the spool's open (bounded by a timeout) and the app's start-up reads
    # run at once; a read must never get the half-opened client that the failed open then closes
    # ("client has been closed" became a permanent StoreError that ended the process with a traceback).
    import asyncio
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = SupabaseRestStore(f"http://127.0.0.1:{port}", SERVICE_KEY, max_attempts=3, retry_initial=0.05,
                              retry_max=0.1, timeout=1.0)

    async def read() -> BaseException | None:
        try:
            await store.gate_seed(structure_window_ms=1)
        except BaseException as exc:  # the test inspects what came out
            return exc
        return None

    async def open_cut_short() -> None:
        with __import__("contextlib").suppress(TimeoutError, StoreUnavailable):
            await asyncio.wait_for(store.open(), 0.08)  # the spool's open_timeout, cut short

    results = await asyncio.gather(open_cut_short(), *(read() for _ in range(5)), open_cut_short())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors and all(isinstance(e, StoreUnavailable) for e in errors), errors
    await store.close()
