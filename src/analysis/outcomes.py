"""Signal outcome rules (SPEC 7, 10): ONE implementation for the live tracker and every backtest.

Feed a :class:`TradeFollower` the closed candles after the signal, one at a time, until it returns
a :class:`~src.storage.base.SignalOutcome`-shaped :class:`Resolution`.

Rules (direction-symmetric; "beyond" means below for a LONG and above for a SHORT):

- Entry: the OPEN of the first candle whose open time is after ``signal.candle_time_ms`` (the
  candle after the confirming one; with a data gap, the next candle there is). Candles at or
  before the confirming candle are ignored.
- Fill prices carry ``slippage_bps`` against the trade on entry AND on every exit
  (fill = price * (1 +/- bps / 10_000)); targets included, which is conservative.
- Target: the FIRST take-profit only; the whole position exits there (no partial exits), so
  later targets do not change the grade. A signal without targets can only stop out or expire.
- The R unit is the signal's planned risk ``|entry - stop_loss|`` (not the fill's distance, which
  can be zero or negative after a gap); position sizing uses the same unit, so P&L = risk * R.
- Per candle, in this order:
  1. the open is at or beyond the stop -> LOSS, exit at the open (a gap through the stop);
  2. the open is at or beyond the target -> WIN, exit at the open;
  3. the range touches the stop (low <= stop for a LONG) -> LOSS at the stop, even when the same
     candle also touches the target (the intrabar order is unknown: the stop is assumed first);
  4. the range touches the target -> WIN at the target;
  5. this is candle number ``horizon_candles`` of the trade (the entry candle is number 1) ->
     EXPIRED at its close.
  Rules 1-2 also apply to the entry candle: an open beyond the stop enters and stops at once.
- Fees: ``commission`` per side on the notional of entry and exit, in R:
  ``commission * (entry_fill + exit_fill) / risk``. ``r_multiple`` = gross R - fees in R.
- Excursions (gross, in R, >= 0, from the entry fill) use candle extremes while held; on the exit
  candle they are clipped at what is known to precede the exit: a stop exit counts the exit price
  as adverse and only the open as favourable; a target exit counts the exit price as favourable
  and the candle's adverse extreme (which stayed short of the stop); an expiry counts the full
  candle. So ``-mae_r - fees_r <= r_multiple <= mfe_r``.

The evidence model's outcome is ``r_multiple`` (net R after fees) and its "win" is ``r_multiple > 0``: an
EXPIRED trade can be a win, a WIN whose target does not clear the fees is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from src.analysis.pickling import register_frozen
from src.analysis.types import Candle, Direction, Signal

OutcomeKind = Literal["WIN", "LOSS", "EXPIRED"]
ExitReason = Literal["stop_gap", "target_gap", "stop", "target", "horizon"]


class InvalidSignalGeometry(ValueError):
    """A signal whose stop or target is on the wrong side of its entry, or whose risk is zero."""


@dataclass(frozen=True, slots=True)
class OutcomeParams:
    """Outcome settings: ``horizon_candles`` (Config.outcome_horizon_candles, default 48),
    ``commission`` per side (BACKTEST_COMMISSION, default 0.0004) and ``slippage_bps`` per fill."""

    horizon_candles: int = 48
    commission: float = 0.0004
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        if self.horizon_candles < 1:
            raise ValueError("horizon_candles must be >= 1")
        if not 0.0 <= self.commission < 0.1:
            raise ValueError("commission must be in [0, 0.1)")
        if not 0.0 <= self.slippage_bps < 1000:
            raise ValueError("slippage_bps must be in [0, 1000)")


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolved trade. ``fees_r`` is in R; ``reason`` tells which rule closed it."""

    signal_id: str
    outcome: OutcomeKind
    reason: ExitReason
    entry_time_ms: int
    entry_price: float
    exit_time_ms: int
    exit_price: float
    r_multiple: float
    gross_r: float
    fees_r: float
    mfe_r: float
    mae_r: float
    bars_held: int
    resolved_at_ms: int


def check_geometry(direction: Direction, entry: float, stop: float, targets: tuple[float, ...]) -> None:
    """Raise InvalidSignalGeometry unless stop and first target lie on the correct sides of entry."""
    if not entry > 0 or not stop > 0 or entry == stop:
        raise InvalidSignalGeometry(f"entry {entry} / stop {stop} give no risk")
    sign = 1.0 if direction == "LONG" else -1.0
    if (entry - stop) * sign <= 0:
        raise InvalidSignalGeometry(f"{direction} stop {stop} is not beyond entry {entry}")
    if targets and (targets[0] - entry) * sign <= 0:
        raise InvalidSignalGeometry(f"{direction} first target {targets[0]} is not beyond entry {entry}")


class TradeFollower:
    """Follows one signal candle by candle; see the module docstring for the rules."""

    __slots__ = (
        "_bars",
        "_entry_fill",
        "_entry_time",
        "_last",
        "_mae",
        "_mfe",
        "_sign",
        "_slip",
        "params",
        "result",
        "risk",
        "signal_id",
        "signal_time_ms",
        "stop",
        "target",
    )

    def __init__(
        self,
        *,
        signal_id: str,
        direction: Direction,
        signal_time_ms: int,
        entry: float,
        stop: float,
        targets: tuple[float, ...],
        params: OutcomeParams,
    ) -> None:
        check_geometry(direction, entry, stop, targets)
        self.signal_id = signal_id
        self.signal_time_ms = signal_time_ms
        self.params = params
        self._sign = 1.0 if direction == "LONG" else -1.0
        self._slip = params.slippage_bps / 10_000.0
        self.stop = stop
        self.target: float | None = targets[0] if targets else None
        self.risk = abs(entry - stop)
        self._entry_fill: float | None = None
        self._entry_time = 0
        self._last = signal_time_ms
        self._bars = 0
        self._mfe = 0.0
        self._mae = 0.0
        self.result: Resolution | None = None

    @classmethod
    def for_signal(cls, signal: Signal, params: OutcomeParams) -> TradeFollower:
        return cls(
            signal_id=signal.id,
            direction=signal.direction,
            signal_time_ms=signal.candle_time_ms,
            entry=signal.entry,
            stop=signal.stop_loss,
            targets=signal.take_profits,
            params=params,
        )

    @property
    def entered(self) -> bool:
        return self._entry_fill is not None

    @property
    def entry_time_ms(self) -> int | None:
        return self._entry_time if self._entry_fill is not None else None

    @property
    def done(self) -> bool:
        return self.result is not None

    def _fill(self, price: float, opening: bool) -> float:
        # Adverse slippage: a buy fills higher, a sell lower. A LONG buys to open and sells to close.
        buy = (self._sign > 0) == opening
        return price * (1.0 + self._slip) if buy else price * (1.0 - self._slip)

    def on_candle(self, c: Candle) -> Resolution | None:
        """Process the next closed candle; returns the resolution once (then None forever)."""
        # closed, before entry, or a repeat of a candle already processed (live duplicates)
        if self.result is not None or c.open_time_ms <= self._last:
            return None
        self._last = c.open_time_ms
        if self._entry_fill is None:
            self._entry_fill = self._fill(c.open, opening=True)
            self._entry_time = c.open_time_ms
        s = self._sign
        fill = self._entry_fill
        self._bars += 1
        # favourable / adverse extremes of this candle, as signed distances from the entry fill
        fav_ext = (c.high - fill) if s > 0 else (fill - c.low)
        adv_ext = (fill - c.low) if s > 0 else (c.high - fill)
        open_move = (c.open - fill) * s
        stop, target = self.stop, self.target
        if (c.open - stop) * s <= 0:
            return self._close(c, "LOSS", "stop_gap", c.open, c.open_time_ms, fav=open_move, adv=-open_move)
        if target is not None and (c.open - target) * s >= 0:
            return self._close(c, "WIN", "target_gap", c.open, c.open_time_ms, fav=open_move, adv=-open_move)
        stop_touched = (c.low <= stop) if s > 0 else (c.high >= stop)
        if stop_touched:
            return self._close(c, "LOSS", "stop", stop, c.open_time_ms, fav=open_move, adv=(fill - stop) * s)
        target_touched = target is not None and ((c.high >= target) if s > 0 else (c.low <= target))
        if target is not None and target_touched:
            return self._close(c, "WIN", "target", target, c.open_time_ms, fav=(target - fill) * s, adv=adv_ext)
        if self._bars >= self.params.horizon_candles:
            return self._close(c, "EXPIRED", "horizon", c.close, c.close_time_ms, fav=fav_ext, adv=adv_ext)
        self._excursion(fav_ext, adv_ext)
        return None

    def _excursion(self, fav: float, adv: float) -> None:
        if fav > self._mfe:
            self._mfe = fav
        if adv > self._mae:
            self._mae = adv

    def _close(
        self, c: Candle, outcome: OutcomeKind, reason: ExitReason, price: float, exit_time: int, *, fav: float, adv: float
    ) -> Resolution:
        self._excursion(fav, adv)
        assert self._entry_fill is not None
        entry_fill = self._entry_fill
        exit_fill = self._fill(price, opening=False)
        gross = (exit_fill - entry_fill) * self._sign / self.risk
        fees = self.params.commission * (entry_fill + exit_fill) / self.risk
        # excursions are measured on fills, so slippage on the exit can push the realised R past them
        mfe = max(self._mfe / self.risk, gross if gross > 0 else 0.0)
        mae = max(self._mae / self.risk, -gross if gross < 0 else 0.0)
        self.result = Resolution(
            signal_id=self.signal_id,
            outcome=outcome,
            reason=reason,
            entry_time_ms=self._entry_time,
            entry_price=entry_fill,
            exit_time_ms=exit_time,
            exit_price=exit_fill,
            r_multiple=gross - fees,
            gross_r=gross,
            fees_r=fees,
            mfe_r=mfe,
            mae_r=mae,
            bars_held=self._bars,
            resolved_at_ms=c.close_time_ms,
        )
        return self.result


def resolve(signal: Signal, candles: Iterable[Candle], params: OutcomeParams) -> Resolution | None:
    """Run the rules over ascending candles (earlier ones are skipped); None if still open at the end."""
    follower = TradeFollower.for_signal(signal, params)
    for c in candles:
        r = follower.on_candle(c)
        if r is not None:
            return r
    return None


register_frozen(OutcomeParams, Resolution)

