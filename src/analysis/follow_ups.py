"""Follow-ups: what happened to a posted signal, decided from the same closed candles and the same rules as its
outcome (:mod:`src.analysis.outcomes`, SPEC 7). Pure: candles and a resolution in, :class:`FollowUp` rows out.

One follow-up per (signal, event):

- terminal, one per signal, from the outcome's :class:`~src.analysis.outcomes.Resolution`:

  ============== ============================================================================================
  ``tp1``        WIN: the first target was hit (or a candle opened beyond it). The rules exit the WHOLE
                 position there; ``r_multiple`` is that trade's net R after fees.
  ``stopped``    LOSS at the stop (touched, or a later candle opened beyond it).
  ``invalidated`` LOSS because the ENTRY candle (the one after the signal's candle) opened at or beyond the
                 stop: the setup's invalidation level broke before a fair entry was possible. Graded as the
                 rules say (a loss at that open); said apart so a trader sees the setup never got going.
  ``expired``    the horizon passed (the close of candle number ``horizon_candles`` of the trade).
  ============== ============================================================================================

- ``tp2`` (informational, signals with two or more targets): after TP1 the price went on to the SECOND target
  before touching the stop, within the same horizon counted from the entry candle. ``r_multiple`` is what an
  exit there would have made (net of fees, same fill rules); the trade itself closed at TP1. Per candle, from
  the TP1 candle on, in the outcome rules' order: a candle opening at/beyond the stop ends the watch;
  one opening at/beyond TP2 reaches it at the open; a range touching the stop ends the watch (the stop counts
  first when one candle touches both); a range touching TP2 reaches it at TP2; candle number ``horizon``
  ends the watch. The TP1 candle is judged the same way (a candle that opened beyond TP2 reaches both there).
- ``tp2_missed``: the TP2 watch ended without it. An internal marker (never posted) so a restart does not
  watch again.

``event_time_ms`` is the OPEN time of the candle the event happened on (shown to users as that candle's close).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from src.analysis import timeframes
from src.analysis.outcomes import OutcomeParams, Resolution
from src.analysis.pickling import register_frozen
from src.analysis.types import Candle, Signal

FollowUpEvent = Literal["tp1", "tp2", "stopped", "expired", "invalidated", "tp2_missed"]
FOLLOW_UP_EVENTS: tuple[FollowUpEvent, ...] = ("tp1", "tp2", "stopped", "expired", "invalidated", "tp2_missed")
POSTED_FOLLOW_UP_EVENTS: tuple[FollowUpEvent, ...] = ("tp1", "tp2", "stopped", "expired", "invalidated")
# the order of events on one candle (a TP2 reached on the TP1 candle comes after TP1)
FOLLOW_UP_ORDER: dict[str, int] = {"invalidated": 0, "stopped": 1, "tp1": 2, "expired": 3, "tp2": 4, "tp2_missed": 5}


@dataclass(frozen=True, slots=True)
class FollowUp:
    """One event of a signal after it was posted (see the module docstring).

    ``price`` is the exit (or TP2) fill; ``r_multiple`` net R after fees; ``bars`` candles since entry (the
    entry candle is 1); ``entry_price`` the entry fill."""

    signal_id: str
    event: FollowUpEvent
    event_time_ms: int
    price: float
    r_multiple: float
    bars: int
    entry_price: float


def follow_up_sort_key(f: FollowUp) -> tuple[int, str, int]:
    """The order follow-ups happened in: event time, signal id, then :data:`FOLLOW_UP_ORDER`."""
    return (f.event_time_ms, f.signal_id, FOLLOW_UP_ORDER[f.event])


def terminal_follow_up(signal: Signal, r: Resolution) -> FollowUp:
    """The terminal follow-up of a resolved signal: tp1, stopped, invalidated or expired."""
    if r.outcome == "WIN":
        event: FollowUpEvent = "tp1"
    elif r.outcome == "LOSS":
        event = "invalidated" if r.reason == "stop_gap" and r.bars_held == 1 else "stopped"
    else:
        event = "expired"
    # Resolution.resolved_at_ms is the close of the exit candle; the event is keyed by that candle's open
    candle_open = r.resolved_at_ms + 1 - timeframes.interval_ms(signal.timeframe)
    return FollowUp(signal.id, event, candle_open, r.exit_price, r.r_multiple, r.bars_held, r.entry_price)


class Tp2Watch:
    """Watches a signal whose TP1 was hit for its second target (see the module docstring).

    Feed it the candles from the TP1 candle on (earlier ones and repeats are ignored); :meth:`on_candle` returns
    the ``tp2`` or ``tp2_missed`` follow-up once, then None forever."""

    __slots__ = ("_bars", "_last", "_sign", "_slip", "done", "entry_fill", "params", "risk", "signal", "stop", "target",
                 "tp1_open_ms")

    def __init__(self, signal: Signal, tp1: FollowUp, params: OutcomeParams) -> None:
        if len(signal.take_profits) < 2:
            raise ValueError(f"signal {signal.id} has no second target")
        if tp1.event != "tp1":
            raise ValueError(f"a TP2 watch starts from the tp1 follow-up, got {tp1.event!r}")
        self.signal = signal
        self.params = params
        self.tp1_open_ms = tp1.event_time_ms
        self.entry_fill = tp1.entry_price
        self.stop = signal.stop_loss
        self.target = signal.take_profits[1]
        self.risk = abs(signal.entry - signal.stop_loss)
        self._sign = 1.0 if signal.direction == "LONG" else -1.0
        self._slip = params.slippage_bps / 10_000.0
        self._bars = tp1.bars - 1  # the TP1 candle makes it tp1.bars again
        self._last = tp1.event_time_ms - 1
        self.done = False

    def on_candle(self, c: Candle) -> FollowUp | None:
        if self.done or c.open_time_ms <= self._last or c.open_time_ms < self.tp1_open_ms:
            return None
        self._last = c.open_time_ms
        self._bars += 1
        s = self._sign
        # (the TP1 candle cannot have opened beyond the stop: the outcome rules would have stopped it out)
        if (c.open - self.stop) * s <= 0:
            return self._end(c, None)
        if (c.open - self.target) * s >= 0:
            return self._end(c, c.open)
        stop_touched = (c.low <= self.stop) if s > 0 else (c.high >= self.stop)
        if stop_touched:
            return self._end(c, None)
        if (c.high >= self.target) if s > 0 else (c.low <= self.target):
            return self._end(c, self.target)
        if self._bars >= self.params.horizon_candles:
            return self._end(c, None)
        return None

    def _end(self, c: Candle, price: float | None) -> FollowUp:
        self.done = True
        if price is None:
            return FollowUp(self.signal.id, "tp2_missed", c.open_time_ms, c.close, 0.0, self._bars, self.entry_fill)
        # an exit there, filled and charged like the outcome rules' exits (a sell for a LONG)
        fill = price * (1.0 - self._slip) if self._sign > 0 else price * (1.0 + self._slip)
        gross = (fill - self.entry_fill) * self._sign / self.risk
        fees = self.params.commission * (self.entry_fill + fill) / self.risk
        return FollowUp(self.signal.id, "tp2", c.open_time_ms, fill, gross - fees, self._bars, self.entry_fill)


register_frozen(FollowUp)

