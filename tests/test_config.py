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
    assert (c.min_confidence, c.signal_cooldown_seconds, c.ws_stall_timeout) == (0.9, 0, 90.0)
    assert (c.trade_min_rr, c.watch_min_rr, c.watch_min_score, c.signal_cooldown_candles) == (1.0, 1.0, 0.65, 12)
    assert c.watch_notes == "signals" and c.evidence_model_path is None and c.discord_watch_channel_id is None
    assert c.warnings == []
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
    assert any("between 0.5 and 1.0" in p for p in problems)


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
                                        "BINANCE_WS_URL", "DATABASE_URL", "LEVERAGE", "ENABLE_ELLIOTT", "TRADE_MIN_RR",
                                        "WATCH_MIN_RR", "WATCH_MIN_SCORE", "SIGNAL_COOLDOWN_CANDLES", "WATCH_NOTES",
                                        "DISCORD_WATCH_CHANNEL_ID", "EVIDENCE_MODEL_PATH", "CALIBRATION_PATH"]),
                       st.text(max_size=40)))
def test_property_arbitrary_values_never_crash_the_loader(env):
    c = Config.from_env(env)
    assert isinstance(c.problems, list)


def test_mask_secret_keeps_only_harmless_parts():
    assert mask_secret("https://discord.com/api/webhooks/1/tok") == "https://discord.com/***"
    assert mask_secret("abcdefgh") == "***(8 chars)"
    assert mask_secret(None) == ""


# ---------------------------------------------------------------------------- issue 10: evidence, gate, watch notes
@pytest.mark.parametrize("name, value, expected", [
    ("MIN_CONFIDENCE", "0.3", "between 0.5 and 1.0"),
    ("MIN_CONFIDENCE", "1.01", "between 0.5 and 1.0"),
    ("TRADE_MIN_RR", "-1", "between 0.0 and 100.0"),
    ("TRADE_MIN_RR", "lots", "a number"),
    ("WATCH_MIN_RR", "nan", "a number"),
    ("WATCH_MIN_SCORE", "2", "between 0.0 and 1.0"),
    ("SIGNAL_COOLDOWN_CANDLES", "-3", "an integer between 0 and 10000"),
    ("SIGNAL_COOLDOWN_CANDLES", "1.5", "an integer"),
    ("SIGNAL_COOLDOWN_SECONDS", "-1", "an integer >= 0"),
    ("WATCH_NOTES", "discord", "one of off, console, signals"),
    ("DISCORD_WATCH_CHANNEL_ID", "general", "Discord snowflake"),
    ("EVIDENCE_MODEL_PATH", "/nonexistent/model.json", "no such file"),
])
def test_each_new_signal_variable_is_validated_with_a_clear_message(name, value, expected):
    problems = Config.from_env({name: value}).problems
    assert len(problems) == 1 and problems[0].startswith(f"{name}=") and expected in problems[0], problems


def test_the_new_signal_variables_are_read():
    env = {"MIN_CONFIDENCE": "0.8", "TRADE_MIN_RR": "1.5", "WATCH_MIN_RR": "0.8", "WATCH_MIN_SCORE": "0.7",
           "SIGNAL_COOLDOWN_CANDLES": "4", "SIGNAL_COOLDOWN_SECONDS": "7200", "WATCH_NOTES": "Console"}
    c = Config.from_env(env).validate()
    assert (c.min_confidence, c.trade_min_rr, c.watch_min_rr, c.watch_min_score) == (0.8, 1.5, 0.8, 0.7)
    assert (c.signal_cooldown_candles, c.signal_cooldown_seconds, c.watch_notes) == (4, 7200, "console")
    assert not c.watch_notes_to_discord


def test_analysis_settings_carry_the_gate_settings_the_engine_knows():
    from dataclasses import fields

    from src.analysis.engine import AnalysisSettings

    c = Config.from_env({"MIN_CONFIDENCE": "0.8", "TRADE_MIN_RR": "1.5", "SIGNAL_COOLDOWN_CANDLES": "4"})
    s = c.analysis_settings()
    expected = {"min_confidence": 0.8, "trade_min_rr": 1.5, "watch_min_rr": 1.0, "watch_min_score": 0.65,
                "cooldown_candles": 4, "cooldown_seconds": 0, "enable_wyckoff": True, "enable_elliott": True}
    known = {f.name for f in fields(AnalysisSettings)}
    assert {"min_confidence", "cooldown_seconds", "enable_wyckoff", "enable_elliott"} <= known
    assert {k: getattr(s, k) for k in known & set(expected)} == {k: v for k, v in expected.items() if k in known}


def test_config_defaults_match_the_engines_own_defaults():
    """Zero configuration and a bare AnalysisSettings() must gate the same way (EVIDENCE picks the engine's)."""
    from dataclasses import MISSING, fields

    from src.analysis.engine import AnalysisSettings
    ours = Config.from_env({}).analysis_settings()
    checked = [f.name for f in fields(AnalysisSettings) if f.default is not MISSING]
    assert "enable_wyckoff" in checked
    for name in checked:
        assert getattr(ours, name) == getattr(AnalysisSettings(), name), name


def test_watch_notes_channel_needs_the_bot_and_its_channel():
    problems = Config.from_env({"WATCH_NOTES": "channel"}).problems
    assert any("WATCH_NOTES=channel needs DISCORD_TOKEN and DISCORD_WATCH_CHANNEL_ID" in p for p in problems)
    bot = {"DISCORD_TOKEN": "t" * 30, "DISCORD_SIGNALS_CHANNEL_ID": "11", "WATCH_NOTES": "channel"}
    assert any("DISCORD_WATCH_CHANNEL_ID" in p for p in Config.from_env(bot).problems)
    c = Config.from_env({**bot, "DISCORD_WATCH_CHANNEL_ID": "22"}).validate()
    assert (c.watch_notes, c.discord_watch_channel_id, c.watch_notes_to_discord) == ("channel", 22, True)


def test_a_watch_channel_without_the_channel_route_is_a_warning_not_an_error():
    c = Config.from_env({"DISCORD_WATCH_CHANNEL_ID": "22"}).validate()
    assert any("DISCORD_WATCH_CHANNEL_ID is set but WATCH_NOTES=signals" in w for w in c.warnings)


def test_calibration_path_is_accepted_with_a_one_line_warning(tmp_path: Path):
    c = Config.from_env({"CALIBRATION_PATH": str(tmp_path / "calibration.json")}).validate()
    assert len(c.warnings) == 1 and "no longer used" in c.warnings[0] and "EVIDENCE_MODEL_PATH" in c.warnings[0]
    assert "\n" not in c.warnings[0]


def test_the_old_min_confidence_default_gets_a_warning_about_the_new_meaning():
    c = Config.from_env({"MIN_CONFIDENCE": "0.65"}).validate()
    assert any("now means the probability" in w for w in c.warnings)
    assert Config.from_env({"MIN_CONFIDENCE": "0.9"}).warnings == []


def test_an_existing_evidence_model_file_passes_configuration_and_is_parsed_at_start(tmp_path: Path):
    path = tmp_path / "model.json"
    path.write_text("{}")
    c = Config.from_env({"EVIDENCE_MODEL_PATH": str(path)}).validate()
    assert c.evidence_model_path == path


def test_check_command_reports_an_unusable_evidence_model_and_prints_warnings(tmp_path: Path):
    model = tmp_path / "model.json"
    model.write_text("not a model")
    env = {"PATH": "/usr/bin:/bin", "EVIDENCE_MODEL_PATH": str(model), "CALIBRATION_PATH": "x.json"}
    r = subprocess.run([sys.executable, "-m", "src.bot.config", "--check", "--no-env-file"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"EVIDENCE_MODEL_PATH={model}" in r.stderr
    assert "CALIBRATION_PATH=x.json is no longer used" in r.stdout
