from __future__ import annotations

import io
import json
import logging

import structlog

from src.bot.logging_setup import MASK, SecretMasker, configure_logging
from src.config import Config

TOKEN = "MTAxMjM0NTY3ODkwMTIzNDU2Nzg5.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
SERVICE_KEY = "sb_secret_AbCdEf0123456789xyz"
DSN = "postgresql://bot:pa55-w0rd-xyz@db.example.org:5432/postgres"
WEBHOOK = "https://discord.com/api/webhooks/123456789/abcDEF-ghi_JKLmnoPQRstu"


def _capture(fmt: str = "json", secrets=()) -> io.StringIO:
    buf = io.StringIO()
    configure_logging("DEBUG", fmt, secrets=secrets, stream=buf)
    return buf


def test_planted_secrets_never_appear_in_our_or_library_log_records():
    cfg = Config.from_env({"DISCORD_TOKEN": TOKEN, "SUPABASE_URL": "https://x.supabase.co",
                           "SUPABASE_SERVICE_KEY": SERVICE_KEY, "DATABASE_URL": DSN, "DISCORD_WEBHOOK_URL": WEBHOOK,
                           "DISCORD_SIGNALS_CHANNEL_ID": "1"})
    buf = _capture("json", cfg.secret_values())
    log = structlog.get_logger("wyeli.test")
    log.info("connecting", dsn=DSN, note=f"token is {TOKEN}", nested={"headers": {"Authorization": f"Bearer {SERVICE_KEY}"}})
    log.warning(f"posting to {WEBHOOK}")
    logging.getLogger("discord.client").error("login failed for %s", TOKEN)
    logging.getLogger("asyncpg").warning("could not connect to %s", DSN)
    logging.getLogger("websockets.client").warning("header apikey=%s", SERVICE_KEY)
    try:
        secret_local = DSN  # noqa: F841 - a local that must not leak through the traceback
        raise RuntimeError(f"boom with {SERVICE_KEY}")
    except RuntimeError:
        log.exception("failed")
    out = buf.getvalue()
    for secret in (TOKEN, SERVICE_KEY, "pa55-w0rd-xyz", "abcDEF-ghi_JKLmnoPQRstu"):
        assert secret not in out
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 6
    assert lines[0]["dsn"] == MASK and "***" in lines[0]["note"]
    assert "Traceback" in lines[-1]["exception"] and "secret_local" not in lines[-1]["exception"]


def test_masker_hides_url_passwords_but_keeps_hosts():
    m = SecretMasker()
    assert m.mask_text("redis://:hunter22@cache:6379/0") == "redis://:***@cache:6379/0"
    assert m.mask_text("postgresql://u:p4ss@h/db") == "postgresql://u:***@h/db"
    assert m.mask_text("plain text stays") == "plain text stays"


def test_text_format_is_readable_and_masked():
    buf = _capture("text", [SERVICE_KEY])
    structlog.get_logger("x").info("hello", key=SERVICE_KEY, symbol="BTCUSDT")
    out = buf.getvalue()
    assert "hello" in out and "BTCUSDT" in out and SERVICE_KEY not in out
    assert not out.lstrip().startswith("{")
