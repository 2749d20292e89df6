"""Reconciliation: the exchange's positions and open algo orders compared with the bot's open positions.

Run on start, after every user-data (re)connect and every RECONCILE_EVERY_S; :func:`plan` is pure, the
trader carries the findings out. What each finding means and what the trader does:

- ``closed_while_away``: a position of ours is gone on the exchange (stop/target fired, closed by hand,
  liquidated) -> the trader finds out how (its protective orders' state), records the close and cancels
  what is left of its protection;
- ``stop_missing`` / ``target_missing``: no live stop (target) order of ours for an open position -> a new
  one is placed (next generation); a missing stop is an ALARM until it is placed;
- ``stop_adopt`` / ``target_adopt``: a live protective order of ours from another generation -> it is
  taken as the position's current one (nothing is sent);
- ``size_mismatch``: the exchange holds a different size (or side) than the bot opened -> reported to the
  admins and left alone (protection is still checked: closePosition stops cover any size);
- ``unexpected_position``: a position the bot did not open -> reported and left alone: the bot never closes
  or flattens on its own;
- ``stale_protection``: a live protective order of ours for a position that is no longer open (it would
  close a later position) -> cancelled. Orders that are not ours are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from src.storage.trading_records import PositionRecord
from src.trading import client_ids
from src.trading.exchange import AlgoOrder, ExchangePosition

FindingKind = Literal["closed_while_away", "stop_missing", "target_missing", "stop_adopt", "target_adopt",
                      "size_mismatch", "unexpected_position", "stale_protection"]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    symbol: str
    position_key: str | None
    client_id: str | None
    detail: str


def plan(open_positions: Sequence[PositionRecord], exchange_positions: Sequence[ExchangePosition],
         algo_orders: Sequence[AlgoOrder], *, size_tolerance: float = 1e-9) -> list[Finding]:
    """Findings for OPEN local positions (PENDING ones are resolved by their entry order, not here)."""
    out: list[Finding] = []
    on_exchange = {p.symbol: p for p in exchange_positions if p.amount != 0}
    ours_live: dict[str, list[tuple[client_ids.ClientId, AlgoOrder]]] = {}
    for a in algo_orders:
        cid = client_ids.parse(a.client_algo_id)
        if cid is not None and cid.role in ("S", "T") and a.live:
            ours_live.setdefault(cid.signal_id, []).append((cid, a))
    local = [p for p in open_positions if p.status == "OPEN"]
    local_symbols = {p.symbol for p in open_positions}
    kept: set[str] = set()
    for p in local:
        ex = on_exchange.get(p.symbol)
        if ex is None:
            out.append(Finding("closed_while_away", p.symbol, p.key, None, "no position on the exchange"))
            continue
        sign = 1 if p.direction == "LONG" else -1
        if ex.amount * sign <= 0 or abs(abs(ex.amount) - p.quantity) > size_tolerance + 1e-12 * p.quantity:
            out.append(Finding("size_mismatch", p.symbol, p.key, None,
                               f"the bot opened {sign * p.quantity:g}, the exchange holds {ex.amount:g}"))
        live = ours_live.get(p.signal_id, [])
        for role, missing, adopt, make in (("S", "stop_missing", "stop_adopt", client_ids.stop_id),
                                           ("T", "target_missing", "target_adopt", client_ids.target_id)):
            if role == "T" and p.take_profit is None:
                continue
            current = make(p.signal_id, p.stop_generation)
            same_role = [(c, a) for c, a in live if c.role == role]
            if any(a.client_algo_id == current for _, a in same_role):
                kept.add(current)
            elif same_role:
                newest = max(same_role, key=lambda ca: ca[0].generation)[1]
                kept.add(newest.client_algo_id)
                out.append(Finding(adopt, p.symbol, p.key, newest.client_algo_id,  # type: ignore[arg-type]
                                   f"live {'stop' if role == 'S' else 'target'} of another generation"))
            else:
                out.append(Finding(missing, p.symbol, p.key, current,  # type: ignore[arg-type]
                                   f"no live {'stop' if role == 'S' else 'target'} order on the exchange"))
    for orders in ours_live.values():
        for _, a in orders:
            if a.client_algo_id not in kept:
                out.append(Finding("stale_protection", a.symbol, None, a.client_algo_id,
                                   "protective order of ours without an open position"))
    for sym, ex in sorted(on_exchange.items()):
        if sym not in local_symbols:
            out.append(Finding("unexpected_position", sym, None, None,
                               f"position {ex.amount:g} @ {ex.entry_price:g} not opened by this bot"))
    return out
