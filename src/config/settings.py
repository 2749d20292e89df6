"""Configuration from environment variables (optionally a ``.env`` file), validated all at once.

``Config.from_env()`` never raises on a bad value: it records every problem, and ``validate()``
raises one :class:`ConfigError` that lists them all (variable, masked value, what is expected).
Values already in the environment win over ``.env`` (as with systemd's EnvironmentFile).
``python -m src.bot.config --check`` (see :mod:`src.config.check`) prints the effective configuration
with secrets masked and every problem, and exits 0 (valid) or 2 (invalid).

This package sits below market data, storage and the bot: every layer may import it, it imports only
the analysis core (interval names, analysis settings).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from src.analysis import timeframes
from src.analysis.engine import AnalysisSettings
from src.config.discord_routes import (
    FOLLOW_UP_MODES,
    ROUTE_KINDS,
    FollowUpMode,
    NotifyMode,
    RouteKind,
    RouteSpec,
    parse_notifications,
    parse_routes,
    parse_utc_offset,
)
from src.config.shards import parse_shard

T = TypeVar("T")

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "ADAUSDT")
SECRET_FIELDS = frozenset(
    {"supabase_service_key", "discord_token", "discord_webhook_url", "binance_api_key", "binance_api_secret",
     "redis_password", "database_url", "redis_url"}
)
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
WatchNotes = Literal["off", "console", "signals", "channel"]
WATCH_NOTE_ROUTES: tuple[WatchNotes, ...] = ("off", "console", "signals", "channel")
OLD_MIN_CONFIDENCE_DEFAULT = 0.65  # the raw-score threshold before the evidence model
USDT_M_QUOTE = "USDT"

BINANCE_HOSTS = ("fstream.binance.com", "fstream.binancefuture.com", "stream.binancefuture.com")
TRADING_MODES = ("off", "paper", "demo", "live")
DEMO_VENUES = ("demo", "testnet")
# signed REST base and user-data WebSocket base (the /private route) per trading mode / demo venue
TRADE_ENDPOINTS = {
    "live": ("https://fapi.binance.com", "wss://fstream.binance.com/private"),
    "demo": ("https://demo-fapi.binance.com", "wss://fstream.binancefuture.com/private"),
    "testnet": ("https://testnet.binancefuture.com", "wss://fstream.binancefuture.com/private"),
}


def usdt_m_name(symbol: str) -> str:
    """The USDT-M perpetual name a user most likely meant: BTC -> BTCUSDT, ETHUSD -> ETHUSDT, BTCUSDT stays."""
    sym = symbol.strip().upper()
    if sym.endswith(USDT_M_QUOTE):
        return sym
    for quote in ("USDC", "BUSD", "USD", "PERP"):
        if sym.endswith(quote) and len(sym) > len(quote):
            return sym[: -len(quote)] + USDT_M_QUOTE
    if len(sym) > 4 and sorted(sym[-4:]) == sorted(USDT_M_QUOTE):  # a typo of the quote: ETHUSTD, BTCUDST
        return sym[:-4] + USDT_M_QUOTE
    return sym + USDT_M_QUOTE



class ConfigError(ValueError):
    """Raised by ``Config.validate`` with every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


def mask_secret(value: str | None) -> str:
    """'' for unset; URLs keep scheme/host with credentials and path tokens hidden; others '***' + length."""
    if not value:
        return ""
    if "://" in value:
        try:
            parts = urlsplit(value)
        except ValueError:
            return f"***({len(value)} chars)"
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}:***@" if parts.username else ""
        path = "/***" if parts.path not in ("", "/") else parts.path
        return f"{parts.scheme}://{user}{host}{port}{path}"
    return f"***({len(value)} chars)"


@dataclass
class Config:
    """Every setting of the bot; see RUNBOOK.md for the reference table."""

    # storage
    supabase_url: str | None = None
    supabase_service_key: str | None = None
    database_url: str | None = None
    sqlite_path: Path = Path("./data/wyeli.db")
    spool_path: Path = Path("./data/spool.db")
    candle_retention_days: int = 90
    # discord
    discord_token: str | None = None
    discord_guild_id: int | None = None
    discord_signals_channel_id: int | None = None
    discord_webhook_url: str | None = None
    discord_owner_ids: tuple[int, ...] = ()
    signal_max_age_seconds: int = 3600
    # discord for a community (issue 14): routes, notification modes, follow-ups, the display offset
    discord_routes: tuple[RouteSpec, ...] = ()
    discord_notifications: dict[RouteKind, NotifyMode] = field(default_factory=lambda: dict.fromkeys(ROUTE_KINDS, "on"))
    discord_follow_ups: FollowUpMode = "reply"
    display_utc_offset: int = 0  # minutes east of UTC (DISPLAY_UTC_OFFSET=+02:00 -> 120)
    # binance
    binance_ws_url: str = "wss://fstream.binance.com/market"
    binance_rest_url: str = "https://fapi.binance.com"
    binance_api_key: str | None = None
    binance_api_secret: str | None = None
    binance_testnet: bool = True
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    symbols_all: bool = False
    timeframes: tuple[str, ...] = ("15m", "1h", "4h")
    warmup_candles: int = 500
    candle_window: int = 500
    # analysis
    enable_wyckoff: bool = True
    enable_elliott: bool = True
    outcome_horizon_candles: int = 48
    # signals: evidence and the gate (issue 10)
    min_confidence: float = 0.9  # P(E[net R] > 0) a trade call needs (0.9: the shown 80 % interval lies above 0)
    trade_min_rr: float = 1.0  # reward/risk to the first target a trade call needs
    watch_min_rr: float = 1.0  # below it a candidate is gated, not even a watch note
    watch_min_score: float = 0.65  # analyzer raw-score floor for a watch note (a volume knob)
    signal_cooldown_candles: int = 12  # per (symbol, timeframe, direction)
    signal_cooldown_seconds: int = 0  # still accepted: effective cooldown = max(candles * interval, seconds)
    evidence_model_path: Path | None = None  # unset = the evidence model shipped with the bot
    watch_notes: WatchNotes = "signals"  # where watch notes go: off | console | signals | channel
    discord_watch_channel_id: int | None = None  # WATCH_NOTES=channel
    calibration_path: Path = Path("./data/calibration.json")  # no longer used by the bot (see EVIDENCE_MODEL_PATH)
    # trading
    enable_trading: bool = False
    enable_live_trading: bool = False
    position_size_usdt: float = 100.0
    max_open_positions: int = 3
    leverage: int = 1
    # trading (issue 13; see src/trading and RUNBOOK section "Trading")
    trading_mode: str = "off"  # off | paper | demo | live, resolved by _Reader.trading
    trading_act_on: str = "trade"
    binance_trade_rest_url: str | None = None
    binance_trade_ws_url: str | None = None
    trading_demo_venue: str = "demo"
    binance_private_key_path: Path | None = None
    margin_type: str = "ISOLATED"
    max_orders_per_day: int = 20
    daily_loss_limit_pct: float = 5.0
    trading_error_limit: int = 5
    trading_error_window_seconds: int = 600
    trading_recv_window_ms: int = 5000
    trading_admin_ids: tuple[int, ...] = ()
    trading_admin_role_ids: tuple[int, ...] = ()
    discord_trading_channel_id: int | None = None
    # cache
    cache_type: str = "none"
    redis_url: str | None = None
    redis_host: str | None = None
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str | None = None
    # logging
    log_level: str = "INFO"
    log_format: str = "auto"
    # websocket
    ws_reconnect_delay: float = 5.0
    ws_max_reconnect_delay: float = 60.0
    ws_stall_timeout: float = 90.0
    ws_max_connection_age: float = 84600.0
    ws_streams_per_connection: int = 200
    # backtest
    backtest_initial_balance: float = 10000.0
    backtest_commission: float = 0.0004
    # backtest jobs (src/jobs): queue limits, the bot's own job processes, the download cache
    jobs_local_workers: int = 1
    jobs_max_active_per_user: int = 2
    jobs_max_active: int = 20
    jobs_max_period_days: int = 366
    jobs_max_attempts: int = 2
    jobs_cache_dir: Path = Path("./data/klines-cache")
    jobs_rest_weight_limit: int = 1000
    # several instances (issue 16): the leader lease on Postgres and symbol shards
    shard: tuple[int, int] = (0, 1)  # SHARD=i/N (0/1 = every symbol)
    lease_ttl_seconds: float = 10.0  # a dead leader's lease expires this long after its last renewal
    lease_renew_seconds: float = 2.0  # renewal (and standby take-over attempt) period
    instance_id: str | None = None  # the lease holder's name (default host:pid:random)
    # http / status
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    status_interval_seconds: int = 60

    problems: list[str] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list, repr=False)  # valid but probably not what the user meant
    # VARIABLE -> (the value read, shown masked for secrets; the problems it has), for --check's table
    invalid: dict[str, tuple[str, list[str]]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, dotenv_path: str | Path | None = ".env",
                 dotenv_required: bool = False) -> Config:
        """Read the process environment (after loading ``.env`` without overriding) or ``env``.
        ``dotenv_required``: the file was named on the command line, so a missing one is a problem."""
        if env is None:
            if dotenv_required and dotenv_path is not None and not Path(dotenv_path).is_file():
                cfg = _Reader(os.environ).build()
                cfg.problems.insert(0, f"env file {dotenv_path} does not exist (check the --env-file path, or use "
                                       "--no-env-file)")
                return cfg
            if dotenv_path is not None and Path(dotenv_path).is_file():
                from dotenv import load_dotenv

                # interpolate=False: secrets may contain '$', and systemd's EnvironmentFile does not expand either
                try:
                    load_dotenv(dotenv_path, override=False, interpolate=False)
                except (OSError, UnicodeDecodeError) as exc:
                    cfg = _Reader(os.environ).build()
                    cfg.problems.insert(0, f"env file {dotenv_path}: cannot be read ({exc.__class__.__name__}: {exc})")
                    return cfg
            env = os.environ
        return _Reader(env).build()

    def validate(self) -> Config:
        """Raise ConfigError listing every problem; return self when the configuration is valid."""
        if self.problems:
            raise ConfigError(list(self.problems))
        return self

    # ------------------------------------------------------------------ derived
    @property
    def storage_backend(self) -> str:
        """'postgres' (DATABASE_URL) > 'supabase' (SUPABASE_URL) > 'sqlite'."""
        if self.database_url:
            return "postgres"
        if self.supabase_url:
            return "supabase"
        return "sqlite"

    @property
    def discord_enabled(self) -> bool:
        return bool(self.discord_token)

    @property
    def effective_redis_url(self) -> str | None:
        if self.cache_type != "redis":
            return None
        if self.redis_url:
            return self.redis_url
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host or 'localhost'}:{self.redis_port}/{self.redis_db}"

    @property
    def trade_rest_url(self) -> str:
        """Signed REST base of the trading mode (BINANCE_TRADE_REST_URL overrides it)."""
        return self.binance_trade_rest_url or TRADE_ENDPOINTS[self._trade_venue][0]

    @property
    def trade_ws_url(self) -> str:
        """User-data WebSocket base of the trading mode, the /private route (BINANCE_TRADE_WS_URL overrides it)."""
        return self.binance_trade_ws_url or TRADE_ENDPOINTS[self._trade_venue][1]

    @property
    def trading_words(self) -> str:
        """The trading mode in plain words, for the start-up log, ``--check`` and ``>status``."""
        host = urlsplit(self.trade_rest_url).hostname or self.trade_rest_url
        return {
            "off": "off (alerts only: no orders, no signed requests)",
            "paper": "PAPER trading: simulated fills on closed candles, no orders sent, no keys used",
            "demo": f"DEMO trading on {host}: test money, real order flow",
            "live": f"LIVE TRADING WITH REAL MONEY on {host}",
        }[self.trading_mode]

    @property
    def _trade_venue(self) -> str:
        return "live" if self.trading_mode == "live" else self.trading_demo_venue

    def analysis_settings(self) -> AnalysisSettings:
        """The engine's and gate's settings (the issue-10 contract's AnalysisSettings)."""
        values: dict[str, Any] = {
            "min_confidence": self.min_confidence,
            "trade_min_rr": self.trade_min_rr,
            "watch_min_rr": self.watch_min_rr,
            "watch_min_score": self.watch_min_score,
            "cooldown_candles": self.signal_cooldown_candles,
            "cooldown_seconds": self.signal_cooldown_seconds,
            "enable_wyckoff": self.enable_wyckoff,
            "enable_elliott": self.enable_elliott,
        }
        return AnalysisSettings(**values)

    @property
    def watch_notes_to_discord(self) -> bool:
        """Watch notes are posted (signals channel or their own channel), not only printed."""
        return self.watch_notes in ("signals", "channel")

    def secret_values(self) -> list[str]:
        """The raw secret strings, for the log masking processor."""
        vals = [getattr(self, name) for name in SECRET_FIELDS] + [r.webhook_url for r in self.discord_routes]
        return [v for v in vals if isinstance(v, str) and len(v) >= 6]

    def describe(self) -> list[tuple[str, str]]:
        """(VARIABLE, effective value) pairs with secrets masked, in declaration order."""
        rows = []
        for f in fields(self):
            if f.name in ("problems", "warnings", "invalid", "symbols_all"):
                continue
            value = getattr(self, f.name)
            if f.name == "symbols" and self.symbols_all:
                value = "ALL"
            if f.name in SECRET_FIELDS:
                shown = mask_secret(value)
            elif f.name == "discord_routes":
                shown = " | ".join(r.describe() for r in self.discord_routes)  # webhook tokens masked
            elif f.name == "discord_notifications":
                shown = ",".join(f"{k}={v}" for k, v in self.discord_notifications.items())
            elif f.name == "shard":
                shown = f"{value[0]}/{value[1]}"
            elif isinstance(value, tuple):
                shown = ",".join(str(v) for v in value)
            elif value is None:
                shown = ""
            else:
                shown = str(value)
            rows.append((f.name.upper(), shown))
        return rows


class _Reader:
    """Parses variables one by one, collecting problems instead of raising."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.invalid: dict[str, tuple[str, list[str]]] = {}

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def bad(self, name: str, value: str, expected: str, secret: bool = False) -> None:
        shown = mask_secret(value) if secret else value
        problem = f"{name}={shown!r}: expected {expected}"
        self.problems.append(problem)
        read = self.raw(name)
        whole = (mask_secret(read) if secret else read) if read is not None else shown
        self.invalid.setdefault(name, (whole, []))[1].append(problem)

    def parse(self, name: str, default: T, conv: Callable[[str], T], expected: str, secret: bool = False) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return conv(value)
        except (ValueError, TypeError):
            self.bad(name, value, expected, secret)
            return default

    def int_(self, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        value = self.parse(name, default, int, _range_text("an integer", lo, hi))
        return int(self._in_range(name, value, default, lo, hi, "an integer"))

    def float_(self, name: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
        value = self.parse(name, default, _finite_float, _range_text("a number", lo, hi))
        return float(self._in_range(name, value, default, lo, hi, "a number"))

    def _in_range(self, name: str, value: Any, default: Any, lo: Any, hi: Any, kind: str) -> Any:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.bad(name, self.raw(name) or str(value), _range_text(kind, lo, hi))
            return default
        return value

    def bool_(self, name: str, default: bool) -> bool:
        return self.parse(name, default, _parse_bool, "true/false (also 1/0, yes/no, on/off)")

    def opt_int(self, name: str) -> int | None:
        return self.parse(name, None, lambda v: _positive_int(v), "a positive integer (a Discord snowflake id)")

    def build(self) -> Config:
        c = Config()
        c.supabase_url = self.url("SUPABASE_URL", ("https", "http"))
        c.supabase_service_key = self.raw("SUPABASE_SERVICE_KEY")
        c.database_url = self.url("DATABASE_URL", ("postgres", "postgresql"), secret=True)
        c.sqlite_path = Path(self.raw("SQLITE_PATH") or c.sqlite_path)
        c.spool_path = Path(self.raw("SPOOL_PATH") or c.spool_path)
        c.candle_retention_days = self.int_("CANDLE_RETENTION_DAYS", c.candle_retention_days, 1)
        if c.supabase_url and not c.supabase_service_key:
            self.problems.append("SUPABASE_SERVICE_KEY is unset: expected the service (secret) key when SUPABASE_URL is set")

        c.discord_token = self.raw("DISCORD_TOKEN")
        c.discord_guild_id = self.opt_int("DISCORD_GUILD_ID")
        c.discord_signals_channel_id = self.opt_int("DISCORD_SIGNALS_CHANNEL_ID")
        c.discord_webhook_url = self.url("DISCORD_WEBHOOK_URL", ("https",), secret=True)
        owners = self.raw("DISCORD_OWNER_IDS")
        if owners:
            try:
                c.discord_owner_ids = tuple(_positive_int(x) for x in owners.split(",") if x.strip())
            except ValueError:
                self.bad("DISCORD_OWNER_IDS", owners, "comma-separated Discord user ids")
        c.signal_max_age_seconds = self.int_("SIGNAL_MAX_AGE_SECONDS", c.signal_max_age_seconds, 0)

        c.binance_ws_url = self.ws_url(self.raw("BINANCE_WS_URL") or c.binance_ws_url)
        c.binance_rest_url = (self.url("BINANCE_REST_URL", ("https", "http")) or c.binance_rest_url).rstrip("/")
        c.binance_api_key = self.raw("BINANCE_API_KEY")
        c.binance_api_secret = self.raw("BINANCE_API_SECRET")
        c.binance_testnet = self.bool_("BINANCE_TESTNET", c.binance_testnet)
        c.symbols, c.symbols_all = self.symbols(self.raw("SYMBOLS"))
        c.timeframes = self.timeframes(self.raw("TIMEFRAMES"))
        self.discord_community(c)
        c.warmup_candles = self.int_("WARMUP_CANDLES", c.warmup_candles, 0, 5000)
        c.candle_window = self.int_("CANDLE_WINDOW", c.candle_window, 50, 10000)

        c.enable_wyckoff = self.bool_("ENABLE_WYCKOFF", c.enable_wyckoff)
        c.enable_elliott = self.bool_("ENABLE_ELLIOTT", c.enable_elliott)
        c.outcome_horizon_candles = self.int_("OUTCOME_HORIZON_CANDLES", c.outcome_horizon_candles, 1, 10000)
        self.signals(c)

        c.enable_trading = self.bool_("ENABLE_TRADING", c.enable_trading)
        c.enable_live_trading = self.bool_("ENABLE_LIVE_TRADING", c.enable_live_trading)
        c.position_size_usdt = self.float_("POSITION_SIZE_USDT", c.position_size_usdt, 1e-9)
        c.max_open_positions = self.int_("MAX_OPEN_POSITIONS", c.max_open_positions, 1, 100)
        c.leverage = self.int_("LEVERAGE", c.leverage, 1, 125)
        self.trading(c)

        cache = (self.raw("CACHE_TYPE") or "none").lower()
        if cache not in ("none", "redis", "memory"):
            self.bad("CACHE_TYPE", cache, "one of none, memory, redis")
            cache = "none"
        c.cache_type = cache
        c.redis_url = self.url("REDIS_URL", ("redis", "rediss", "unix"), secret=True)
        c.redis_host = self.raw("REDIS_HOST")
        c.redis_port = self.int_("REDIS_PORT", c.redis_port, 1, 65535)
        c.redis_db = self.int_("REDIS_DB", c.redis_db, 0, 1000)
        c.redis_password = self.raw("REDIS_PASSWORD")

        level = (self.raw("LOG_LEVEL") or c.log_level).upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            self.bad("LOG_LEVEL", level, "one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
            level = "INFO"
        c.log_level = level
        fmt = (self.raw("LOG_FORMAT") or c.log_format).lower()
        if fmt not in ("auto", "json", "text"):
            self.bad("LOG_FORMAT", fmt, "one of json, text, auto (text on a terminal, else json)")
            fmt = "auto"
        c.log_format = fmt

        c.ws_reconnect_delay = self.float_("WS_RECONNECT_DELAY", c.ws_reconnect_delay, 0.01, 3600)
        c.ws_max_reconnect_delay = self.float_("WS_MAX_RECONNECT_DELAY", c.ws_max_reconnect_delay, 0.01, 86400)
        if c.ws_max_reconnect_delay < c.ws_reconnect_delay:
            self.problems.append(
                f"WS_MAX_RECONNECT_DELAY={c.ws_max_reconnect_delay}: expected >= WS_RECONNECT_DELAY ({c.ws_reconnect_delay})"
            )
        c.ws_stall_timeout = self.float_("WS_STALL_TIMEOUT", c.ws_stall_timeout, 0.1, 86400)
        c.ws_max_connection_age = self.float_("WS_MAX_CONNECTION_AGE", c.ws_max_connection_age, 1, 86400)
        c.ws_streams_per_connection = self.int_("WS_STREAMS_PER_CONNECTION", c.ws_streams_per_connection, 1, 1024)

        c.backtest_initial_balance = self.float_("BACKTEST_INITIAL_BALANCE", c.backtest_initial_balance, 1e-9)
        c.backtest_commission = self.float_("BACKTEST_COMMISSION", c.backtest_commission, 0.0, 0.1)

        c.jobs_local_workers = self.int_("JOBS_LOCAL_WORKERS", c.jobs_local_workers, 0, 16)
        c.jobs_max_active_per_user = self.int_("JOBS_MAX_ACTIVE_PER_USER", c.jobs_max_active_per_user, 1, 1000)
        c.jobs_max_active = self.int_("JOBS_MAX_ACTIVE", c.jobs_max_active, 1, 100000)
        c.jobs_max_period_days = self.int_("JOBS_MAX_PERIOD_DAYS", c.jobs_max_period_days, 1, 36600)
        c.jobs_max_attempts = self.int_("JOBS_MAX_ATTEMPTS", c.jobs_max_attempts, 1, 10)
        c.jobs_cache_dir = Path(self.raw("JOBS_CACHE_DIR") or c.jobs_cache_dir)
        c.jobs_rest_weight_limit = self.int_("JOBS_REST_WEIGHT_LIMIT", c.jobs_rest_weight_limit, 10, 2000)

        self.instances(c)
        c.http_host = self.raw("HTTP_HOST") or c.http_host
        c.http_port = self.int_("HTTP_PORT", c.http_port, 0, 65535)
        c.status_interval_seconds = self.int_("STATUS_INTERVAL_SECONDS", c.status_interval_seconds, 0, 86400)
        c.problems = self.problems
        c.warnings = self.warnings
        c.invalid = self.invalid
        return c

    def instances(self, c: Config) -> None:
        """SHARD, LEASE_TTL_SECONDS, LEASE_RENEW_SECONDS, INSTANCE_ID (issue 16, RUNBOOK "Several instances")."""
        shard = self.raw("SHARD")
        if shard:
            try:
                c.shard = parse_shard(shard)
            except ValueError as exc:
                self.bad("SHARD", shard, f"i/N with 0 <= i < N (this instance's share of the symbols): {exc}")
        c.lease_ttl_seconds = self.float_("LEASE_TTL_SECONDS", c.lease_ttl_seconds, 2.0, 300.0)
        c.lease_renew_seconds = self.float_("LEASE_RENEW_SECONDS", c.lease_renew_seconds, 0.2, 100.0)
        if c.lease_renew_seconds * 3 > c.lease_ttl_seconds:
            self.problems.append(
                f"LEASE_RENEW_SECONDS={c.lease_renew_seconds:g}: expected <= LEASE_TTL_SECONDS / 3 "
                f"({c.lease_ttl_seconds / 3:g}): the leader stops acting one renewal period before its lease expires "
                "and must have had two more chances to renew by then")
        instance = self.raw("INSTANCE_ID")
        if instance is not None and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,100}", instance):
            self.bad("INSTANCE_ID", instance, "1-100 letters, digits or _.:@- (the name shown as the lease holder)")
        else:
            c.instance_id = instance
        if c.shard[1] > 1 and not c.database_url:
            self.warnings.append(
                f"SHARD={c.shard[0]}/{c.shard[1]} without DATABASE_URL: the other shards' instances need the same "
                "database, and only Postgres (DATABASE_URL) holds the leader lease that keeps them from posting twice")

    def signals(self, c: Config) -> None:
        """The evidence model, the gate and where watch notes go (issue 10)."""
        c.min_confidence = self.float_("MIN_CONFIDENCE", c.min_confidence, 0.5, 1.0)
        if self.raw("MIN_CONFIDENCE") is not None and c.min_confidence == OLD_MIN_CONFIDENCE_DEFAULT:
            self.warnings.append(
                "MIN_CONFIDENCE=0.65 was the old default for the analyzer's raw score; it now means the probability "
                "that a trade call's expected net R is above 0 (default 0.9). Check it is what you want."
            )
        c.trade_min_rr = self.float_("TRADE_MIN_RR", c.trade_min_rr, 0.0, 100.0)
        c.watch_min_rr = self.float_("WATCH_MIN_RR", c.watch_min_rr, 0.0, 100.0)
        c.watch_min_score = self.float_("WATCH_MIN_SCORE", c.watch_min_score, 0.0, 1.0)
        c.signal_cooldown_candles = self.int_("SIGNAL_COOLDOWN_CANDLES", c.signal_cooldown_candles, 0, 10000)
        c.signal_cooldown_seconds = self.int_("SIGNAL_COOLDOWN_SECONDS", c.signal_cooldown_seconds, 0)
        model = self.raw("EVIDENCE_MODEL_PATH")
        if model is not None:
            c.evidence_model_path = Path(model)
            if not c.evidence_model_path.is_file():
                self.bad("EVIDENCE_MODEL_PATH", model, "an evidence model file written by `python -m backtest evidence fit` "
                                                       "(no such file; unset it to use the model shipped with the bot)")
        calibration = self.raw("CALIBRATION_PATH")
        if calibration is not None:
            c.calibration_path = Path(calibration)
            self.warnings.append(f"CALIBRATION_PATH={calibration} is no longer used: the bot shows evidence-based estimates "
                                 "now; see EVIDENCE_MODEL_PATH")
        route = (self.raw("WATCH_NOTES") or c.watch_notes).lower()
        if route not in WATCH_NOTE_ROUTES:
            self.bad("WATCH_NOTES", route, "one of off, console, signals (the signals channel), channel "
                                           "(DISCORD_WATCH_CHANNEL_ID)")
            route = c.watch_notes
        c.watch_notes = WATCH_NOTE_ROUTES[WATCH_NOTE_ROUTES.index(route)]
        c.discord_watch_channel_id = self.opt_int("DISCORD_WATCH_CHANNEL_ID")
        if c.watch_notes == "channel" and not (c.discord_token and c.discord_watch_channel_id):
            self.problems.append("WATCH_NOTES=channel needs DISCORD_TOKEN and DISCORD_WATCH_CHANNEL_ID (the channel for "
                                 "watch notes); or set WATCH_NOTES to off, console or signals")
        elif c.discord_watch_channel_id is not None and c.watch_notes != "channel":
            self.warnings.append(f"DISCORD_WATCH_CHANNEL_ID is set but WATCH_NOTES={c.watch_notes}: it is not used "
                                 "(set WATCH_NOTES=channel to post watch notes there)")

    # ------------------------------------------------------------------ trading (issue 13)
    def trading(self, c: Config) -> None:
        """TRADING_MODE and the trading limits. Unset TRADING_MODE follows ENABLE_TRADING / BINANCE_TESTNET:
        off; true + testnet -> demo; true + not testnet -> live (needs ENABLE_LIVE_TRADING=true too).
        live always needs all three switches; demo and live need keys; TRADING_ACT_ON=all is refused in live."""
        mode = (self.raw("TRADING_MODE") or "").lower()
        if mode and mode not in TRADING_MODES:
            self.bad("TRADING_MODE", mode, "one of off, paper, demo, live")
            mode = "off"
        if not mode:
            mode = "off" if not c.enable_trading else ("demo" if c.binance_testnet else "live")
        if mode == "live":
            missing = [name for name, on in (("ENABLE_TRADING=true", c.enable_trading),
                                             ("BINANCE_TESTNET=false", not c.binance_testnet),
                                             ("ENABLE_LIVE_TRADING=true", c.enable_live_trading)) if not on]
            if missing:
                self.problems.append(
                    "live trading (real money) needs ENABLE_TRADING=true, BINANCE_TESTNET=false and "
                    f"ENABLE_LIVE_TRADING=true; missing: {', '.join(missing)} (use TRADING_MODE=demo or paper to practise)")
                mode = "off"
        c.trading_mode = mode
        act_on = (self.raw("TRADING_ACT_ON") or c.trading_act_on).lower()
        if act_on not in ("trade", "all"):
            self.bad("TRADING_ACT_ON", act_on, "trade (trade calls only) or all (also watch notes; paper/demo only)")
            act_on = "trade"
        if act_on == "all" and mode == "live":
            self.problems.append("TRADING_ACT_ON=all is refused in live mode: real money acts on trade calls only")
            act_on = "trade"
        c.trading_act_on = act_on
        c.binance_trade_rest_url = (self.url("BINANCE_TRADE_REST_URL", ("https", "http")) or "").rstrip("/") or None
        c.binance_trade_ws_url = (self.url("BINANCE_TRADE_WS_URL", ("wss", "ws")) or "").rstrip("/") or None
        venue = (self.raw("TRADING_DEMO_VENUE") or c.trading_demo_venue).lower()
        if venue not in DEMO_VENUES:
            self.bad("TRADING_DEMO_VENUE", venue, "demo (demo-fapi.binance.com) or testnet (the legacy futures testnet)")
            venue = "demo"
        c.trading_demo_venue = venue
        key_path = self.raw("BINANCE_PRIVATE_KEY_PATH")
        if key_path:
            c.binance_private_key_path = Path(key_path)
            if not c.binance_private_key_path.is_file():
                self.bad("BINANCE_PRIVATE_KEY_PATH", key_path, "the path of a readable Ed25519 private key PEM file")
        margin = (self.raw("MARGIN_TYPE") or c.margin_type).upper()
        if margin not in ("ISOLATED", "CROSSED"):
            self.bad("MARGIN_TYPE", margin, "ISOLATED or CROSSED")
            margin = "ISOLATED"
        c.margin_type = margin
        c.max_orders_per_day = self.int_("MAX_ORDERS_PER_DAY", c.max_orders_per_day, 1, 10000)
        c.daily_loss_limit_pct = self.float_("DAILY_LOSS_LIMIT_PCT", c.daily_loss_limit_pct, 0.1, 100.0)
        c.trading_error_limit = self.int_("TRADING_ERROR_LIMIT", c.trading_error_limit, 1, 1000)
        c.trading_error_window_seconds = self.int_("TRADING_ERROR_WINDOW_SECONDS", c.trading_error_window_seconds, 10, 86400)
        c.trading_recv_window_ms = self.int_("TRADING_RECV_WINDOW_MS", c.trading_recv_window_ms, 1000, 60000)
        c.trading_admin_ids = self.id_list("TRADING_ADMIN_IDS")
        c.trading_admin_role_ids = self.id_list("TRADING_ADMIN_ROLE_IDS")
        c.discord_trading_channel_id = self.opt_int("DISCORD_TRADING_CHANNEL_ID")
        if mode in ("demo", "live") and not (c.binance_api_key and (c.binance_api_secret or c.binance_private_key_path)):
            self.problems.append(
                f"TRADING_MODE={mode} needs BINANCE_API_KEY and BINANCE_API_SECRET (or BINANCE_PRIVATE_KEY_PATH for an "
                "Ed25519 key); paper trading needs no keys")

    def id_list(self, name: str) -> tuple[int, ...]:
        value = self.raw(name)
        if not value:
            return ()
        try:
            return tuple(_positive_int(x) for x in value.split(",") if x.strip())
        except ValueError:
            self.bad(name, value, "comma-separated Discord ids (numbers)")
            return ()

    def discord_community(self, c: Config) -> None:
        """DISCORD_ROUTES, DISCORD_NOTIFICATIONS, DISCORD_FOLLOW_UPS and DISPLAY_UTC_OFFSET (issue 14; syntax in
        src/config/discord_routes.py), and the channel a bot token needs somewhere to post."""
        routes_text = self.raw("DISCORD_ROUTES")
        if routes_text is not None:
            routes, problems, warnings = parse_routes(routes_text, symbols=c.symbols, symbols_all=c.symbols_all,
                                                      configured_timeframes=c.timeframes)
            c.discord_routes = tuple(routes)
            self.problems += problems
            self.warnings += warnings
            legacy = {f"discord:{x}" for x in (c.discord_signals_channel_id, c.discord_watch_channel_id) if x}
            for r in routes:
                if r.channel_id is not None and not c.discord_token:
                    self.problems.append(f"DISCORD_ROUTES route '{r.name}': channel= needs DISCORD_TOKEN (the bot posts "
                                         "there); use webhook= to post without a bot")
                if r.destination in legacy:
                    self.problems.append(f"DISCORD_ROUTES route '{r.name}': channel {r.channel_id} is already "
                                         "DISCORD_SIGNALS_CHANNEL_ID or DISCORD_WATCH_CHANNEL_ID; one channel, one route")
        notifications = self.raw("DISCORD_NOTIFICATIONS")
        if notifications is not None:
            c.discord_notifications, problems = parse_notifications(notifications)
            self.problems += problems
        mode = (self.raw("DISCORD_FOLLOW_UPS") or c.discord_follow_ups).lower()
        if mode not in FOLLOW_UP_MODES:
            self.bad("DISCORD_FOLLOW_UPS", mode, "one of reply (a reply to the signal), thread (in a thread on it), off")
        else:
            c.discord_follow_ups = FOLLOW_UP_MODES[FOLLOW_UP_MODES.index(mode)]
        offset = self.raw("DISPLAY_UTC_OFFSET")
        if offset is not None:
            minutes = parse_utc_offset(offset)
            if minutes is None:
                self.bad("DISPLAY_UTC_OFFSET", offset, "an offset from UTC like +02:00, -5 or +5:30 (-12 to +14 hours)")
            else:
                c.display_utc_offset = minutes
        if c.discord_token and c.discord_signals_channel_id is None and not any(r.channel_id for r in c.discord_routes):
            self.problems.append(
                "DISCORD_SIGNALS_CHANNEL_ID is unset: expected the id of the channel for signals when DISCORD_TOKEN is set "
                "(or a channel route in DISCORD_ROUTES)"
            )

    def url(self, name: str, schemes: tuple[str, ...], secret: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            ok = parts.scheme in schemes and (bool(parts.netloc) or parts.scheme == "unix")
        except ValueError:
            ok = False
        if not ok:
            self.bad(name, value, f"a URL starting with {' or '.join(s + '://' for s in schemes)}", secret)
            return None
        return value

    def ws_url(self, value: str) -> str:
        try:
            parts = urlsplit(value)
        except ValueError:
            self.bad("BINANCE_WS_URL", value, "a wss:// URL such as wss://fstream.binance.com/market")
            return Config.binance_ws_url
        if parts.scheme not in ("wss", "ws") or not parts.netloc:
            self.bad("BINANCE_WS_URL", value, "a wss:// URL such as wss://fstream.binance.com/market")
            return Config.binance_ws_url
        path = parts.path.rstrip("/")
        if parts.hostname in BINANCE_HOSTS and not path.endswith("/market"):
            self.bad(
                "BINANCE_WS_URL",
                value,
                "the routed market-data path ending in /market (e.g. wss://fstream.binance.com/market); "
                "Binance's legacy unrouted URLs accept connections but have sent no kline data since 2026-04-23",
            )
            return Config.binance_ws_url
        if path.split("/")[-1] in ("stream", "ws"):
            self.bad("BINANCE_WS_URL", value, "the base URL without /stream or /ws (the bot appends /stream?streams=...)")
            return Config.binance_ws_url
        return f"{parts.scheme}://{parts.netloc}{path}"

    def symbols(self, value: str | None) -> tuple[tuple[str, ...], bool]:
        if value is None:
            return DEFAULT_SYMBOLS, False
        if value.strip().upper() == "ALL":
            return (), True
        out: list[str] = []
        bad_items = 0
        for item in value.split(","):
            sym = item.strip().upper()
            if not sym:
                continue
            if not _SYMBOL_RE.match(sym):
                self.bad("SYMBOLS", item.strip(), "comma-separated symbols like BTCUSDT,ETHUSDT (or ALL)")
                bad_items += 1
                continue
            if not sym.endswith(USDT_M_QUOTE):  # BTC, ETHUSD: the bot streams USDT-margined perpetuals only
                self.bad("SYMBOLS", item.strip(), f"a USDT-M perpetual name ending in {USDT_M_QUOTE} "
                                                  f"(did you mean {usdt_m_name(sym)}?)")
                bad_items += 1
                continue
            if sym not in out:
                out.append(sym)
        if not out:
            if not bad_items:  # only commas and spaces
                self.bad("SYMBOLS", value, "at least one symbol like BTCUSDT (or ALL)")
            return DEFAULT_SYMBOLS, False
        return tuple(out), False

    def timeframes(self, value: str | None) -> tuple[str, ...]:
        if value is None:
            return Config.timeframes
        out: list[str] = []
        bad_items = 0
        for item in value.split(","):
            tf = item.strip()
            if not tf:
                continue
            if not timeframes.is_interval(tf):
                self.bad("TIMEFRAMES", tf, f"Binance intervals from {', '.join(timeframes.INTERVALS)}")
                bad_items += 1
                continue
            if tf not in out:
                out.append(tf)
        if not out:
            if not bad_items:  # only commas and spaces
                self.bad("TIMEFRAMES", value, "at least one interval, e.g. 15m,1h,4h")
            return Config.timeframes
        return tuple(sorted(out, key=timeframes.sort_key))


def _range_text(kind: str, lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f"{kind} between {lo} and {hi}"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def _finite_float(value: str) -> float:
    f = float(value)
    if f != f or f in (float("inf"), float("-inf")):
        raise ValueError("not finite")
    return f


def _positive_int(value: str) -> int:
    i = int(value.strip())
    if i <= 0:
        raise ValueError("not positive")
    return i


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)
