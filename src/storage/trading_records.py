"""What trading writes down (issue 13): orders, positions, the audit log and a little durable state,
and the :class:`TradingStore` port every backend implements (SQLite, Postgres, Supabase REST, the spool).

Rules every backend keeps:
- orders are upserted on ``client_order_id``, positions on ``key`` (``"<mode>:<signal_id>"``), state on
  ``key``; audit entries are inserted once per ``event_id`` (a replay from the outage spool never
  duplicates one) and never updated;
- ``details`` / state values are JSON object text, stored as JSON; times are UTC epoch ms;
- reads return these dataclasses, never dicts; a failure raises StoreError / StoreUnavailable.

Nothing here may hold a key or secret: the trading package scrubs requests before they become records.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import orjson

TradingMode = Literal["paper", "demo", "live"]
TRADING_RECORD_MODES: tuple[TradingMode, ...] = ("paper", "demo", "live")
OrderPurpose = Literal["entry", "stop", "target", "close"]
PositionStatus = Literal["PENDING", "OPEN", "CLOSED", "FAILED"]
OPEN_STATUSES: tuple[PositionStatus, ...] = ("PENDING", "OPEN")


def position_key(mode: str, signal_id: str) -> str:
    """The natural key of the position a signal opens in ``mode``."""
    return f"{mode}:{signal_id}"


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One order the bot sent (or simulated in paper mode), as last known.

    ``status`` is Binance's order status (NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, REJECTED) or algo
    status (NEW, TRIGGERING, TRIGGERED, FINISHED, CANCELED, EXPIRED, REJECTED), or the bot's own:
    PENDING_SUBMIT (written before the request leaves), UNKNOWN (the answer was lost: being resolved by
    querying the client id, never re-sent), NOT_PLACED (proved never accepted). ``avg_price`` and
    ``filled_qty`` are the fills so far; ``stop_price`` is the trigger of a stop or target.
    """

    client_order_id: str
    mode: TradingMode
    signal_id: str | None
    position_key: str | None
    symbol: str
    side: Literal["BUY", "SELL"]
    order_type: str
    purpose: OrderPurpose
    quantity: float
    stop_price: float | None
    reduce_only: bool
    close_position: bool
    algo: bool
    status: str
    filled_qty: float
    avg_price: float | None
    exchange_order_id: str | None
    error: str | None
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """A position opened for one signal. ``quantity`` is the filled size (the planned one while PENDING);
    ``risk_per_unit`` is the signal's |entry - stop| (the R unit, as in SPEC 7); ``realized_pnl`` is in
    USDT after fees; ``r_multiple`` is after fees; ``protection`` says which protective orders are live
    (``stop+target``, ``stop``, ``none``, or ``simulated`` in paper mode); ``stop_generation`` counts
    re-placed stops (it is part of the stop's client id)."""

    key: str
    mode: TradingMode
    signal_id: str
    symbol: str
    timeframe: str
    pattern: str
    direction: Literal["LONG", "SHORT"]
    status: PositionStatus
    quantity: float
    planned_entry: float
    entry_price: float | None
    stop_loss: float
    take_profit: float | None
    leverage: int
    risk_per_unit: float
    opened_at_ms: int | None
    closed_at_ms: int | None
    exit_price: float | None
    exit_reason: str | None
    realized_pnl: float | None
    fees: float
    r_multiple: float | None
    protection: str
    stop_generation: int
    note: str
    created_at_ms: int
    updated_at_ms: int

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log: an action of the bot or an admin, or an exchange answer.

    ``actor`` is ``bot``, ``exchange`` or ``discord:<user id>``; ``ref`` is the client order id the entry
    is about; ``details`` is JSON object text (scrubbed of secrets before it gets here)."""

    event_id: str
    at_ms: int
    actor: str
    action: str
    mode: str
    symbol: str | None
    signal_id: str | None
    ref: str | None
    details: str

    @classmethod
    def make(cls, at_ms: int, actor: str, action: str, mode: str, *, symbol: str | None = None,
             signal_id: str | None = None, ref: str | None = None, details: dict[str, Any] | None = None) -> AuditEntry:
        text = orjson.dumps(details or {}, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
        return cls(uuid.uuid4().hex, at_ms, actor, action, mode, symbol, signal_id, ref, text)

    @property
    def data(self) -> dict[str, Any]:
        value = orjson.loads(self.details)
        return value if isinstance(value, dict) else {"value": value}


@runtime_checkable
class TradingStore(Protocol):
    """What the trader needs from a store."""

    async def save_order(self, order: OrderRecord) -> None:
        """Upsert on client_order_id."""

    async def get_order(self, client_order_id: str) -> OrderRecord | None: ...

    async def recent_orders(self, mode: str, *, limit: int = 20, signal_id: str | None = None) -> list[OrderRecord]:
        """Newest first (by created_at, then client id); with ``signal_id`` only that signal's orders."""

    async def save_position(self, position: PositionRecord) -> None:
        """Upsert on key."""

    async def get_position(self, key: str) -> PositionRecord | None: ...

    async def open_positions(self, mode: str) -> list[PositionRecord]:
        """PENDING and OPEN positions of ``mode``, oldest first."""

    async def closed_positions(self, mode: str, *, since_ms: int = 0, limit: int = 1000) -> list[PositionRecord]:
        """CLOSED positions of ``mode`` closed at or after ``since_ms``, newest first."""

    async def append_audit(self, entry: AuditEntry) -> None:
        """Insert once per event_id (a second insert of the same event is ignored)."""

    async def audit_entries(self, *, mode: str | None = None, since_ms: int = 0, limit: int = 1000) -> list[AuditEntry]:
        """Entries at or after ``since_ms``, oldest first (at_ms, event_id), at most ``limit``."""

    async def get_trading_state(self, key: str) -> str | None:
        """JSON text stored under ``key``, or None."""

    async def set_trading_state(self, key: str, value: str) -> None:
        """Upsert JSON text under ``key``."""
