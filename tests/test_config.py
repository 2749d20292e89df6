from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.config import Config, ConfigError, mask_secret

REPO = Path(__file__).resolve().parent.parent


def test_no_configuration_gives_alerts_only_sqlite_console_defaults():
    c = Config.from_env({}).validate()
    assert c.storage_backend == "sqlite" and not c.discord_enabled and not c.enable_trading
    assert c.symbols == ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "ADAUSDT")
    assert c.timeframes == ("15m", "1h", "4h")
    assert (c.min_confidence, c.signal_cooldown_seconds, c.ws_stall_timeout) == (0.65, 300, 90.0)
    assert c.binance_ws_url == "wss://fstream.binance.com/market"


def test_every_bad_variable_is_reported_at_once_with_name_and_expectation():
    env = {
        "MIN_CONFIDENCE": "1.5",
        "TIMEFRAMES": "15m,2m",
        "WS_STALL_TIMEOUT": "soon",
        "ENABLE_WYCKOFF": "maybe",
        "DISCORD_GUILD_ID": "-4",
        "LOG_LEVEL": "LOUD",
        "HTTP_PORT": "70000",
    }
    with pytest.raises(ConfigError) as err:
        Config.from_env(env).validate()
    problems = err.value.problems
    for name in env:
        assert any(p.startswith(name + "=") for p in problems), name
    assert any("between 0.0 and 1.0" in p for p in problems)


def test_legacy_binance_websocket_url_is_refused_with_the_reason():
    for url in ("wss://fstream.binance.com", "wss://fstream.binance.com/ws", "wss://fstream.binance.com/stream"):
        problems = Config.from_env({"BINANCE_WS_URL": url}).problems
        assert problems and "/market" in problems[0], url
    assert not Config.from_env({"BINANCE_WS_URL": "ws://127.0.0.1:9000/market"}).problems
    assert not Config.from_env({"BINANCE_WS_URL": "ws://127.0.0.1:9000"}).problems  # a local test peer


def test_secrets_are_masked_in_problems_and_in_the_description():
    dsn = "postgresql://bot:s3cr3t-pass@db.example.org:5432/postgres"
    c = Config.from_env({"DATABASE_URL": dsn, "DISCORD_TOKEN": "abc.def.ghijklmnop", "DISCORD_SIGNALS_CHANNEL_ID": "5",
                         "REDIS_URL": "http://:pw123456@x"})
    text = repr(c.describe()) + repr(c.problems)
    assert "s3cr3t-pass" not in text and "ghijklmnop" not in text and "pw123456" not in text
    assert "db.example.org" in text
    assert c.storage_backend == "postgres"


def test_symbols_all_and_dedup_and_case():
    assert Config.from_env({"SYMBOLS": "ALL"}).symbols_all
    c = Config.from_env({"SYMBOLS": "btcusdt, ETHUSDT,btcusdt"})
    assert c.symbols == ("BTCUSDT", "ETHUSDT")


def test_discord_token_without_channel_is_a_problem():
    assert any("DISCORD_SIGNALS_CHANNEL_ID" in p for p in Config.from_env({"DISCORD_TOKEN": "x" * 30}).problems)


def test_dotenv_file_is_read_but_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env_file = tmp_path / ".env"
    env_file.write_text("MIN_CONFIDENCE=0.7\nSIGNAL_COOLDOWN_SECONDS=60\nSUPABASE_SERVICE_KEY=pa$$word\n")
    monkeypatch.setenv("SIGNAL_COOLDOWN_SECONDS", "120")
    for k in ("MIN_CONFIDENCE", "SUPABASE_SERVICE_KEY"):
        monkeypatch.delenv(k, raising=False)
    c = Config.from_env(dotenv_path=env_file)
    assert c.min_confidence == 0.7 and c.signal_cooldown_seconds == 120
    assert c.supabase_service_key == "pa$$word"  # no ${} interpolation of secrets


def test_check_command_prints_masked_config_and_exits_non_zero_on_problems(tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", "DISCORD_TOKEN": "tok-" + "z" * 40, "MIN_CONFIDENCE": "abc"}
    r = subprocess.run([sys.executable, "-m", "src.bot.config", "--check", "--no-env-file"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    row = next(line for line in r.stdout.splitlines() if line.startswith("MIN_CONFIDENCE"))
    assert "abc" in row and "invalid" in row and "DISCORD_SIGNALS_CHANNEL_ID" in r.stderr
    assert "z" * 40 not in r.stdout + r.stderr
    ok = subprocess.run([sys.executable, "-m", "src.bot.config", "--check", "--no-env-file"],
                        cwd=REPO, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "configuration OK" in ok.stdout


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["MIN_CONFIDENCE", "TIMEFRAMES", "SYMBOLS", "WS_RECONNECT_DELAY", "HTTP_PORT",
                                        "BINANCE_WS_URL", "DATABASE_URL", "LEVERAGE", "ENABLE_ELLIOTT"]),
                       st.text(max_size=40)))
def test_property_arbitrary_values_never_crash_the_loader(env):
    c = Config.from_env(env)
    assert isinstance(c.problems, list)


def test_mask_secret_keeps_only_harmless_parts():
    assert mask_secret("https://discord.com/api/webhooks/1/tok") == "https://discord.com/***"
    assert mask_secret("abcdefgh") == "***(8 chars)"
    assert mask_secret(None) == ""
