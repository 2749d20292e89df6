"""Client order ids derived from the signal id, so a retry can never open a second position.

Binance accepts ``newClientOrderId`` / ``clientAlgoId`` matching ``^[.A-Z:/a-z0-9_-]{1,36}$``. A signal id is
24 hex characters (src/analysis/types.signal_id), so every id below is at most 30 characters:

- entry ``wyE-<signal>``: one per signal, ever (Binance refuses a duplicate id, and the bot never sends an
  entry for a signal whose position record exists);
- stop ``wyS<g>-<signal>`` and target ``wyT<g>-<signal>``: generation ``g`` (0-99) grows each time a
  protective order has to be placed again (after it was cancelled, expired, or proved never placed);
- close ``wyX<n>-<signal>``: the n-th reduce-only market close (a flatten, or a stop breached before it
  could be placed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["E", "S", "T", "X"]
BINANCE_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_OURS_RE = re.compile(r"^wy([ESTX])(\d{0,2})-([0-9a-f]{8,30})$")
MAX_GENERATION = 99


@dataclass(frozen=True, slots=True)
class ClientId:
    role: Role
    generation: int
    signal_id: str


def _make(role: Role, generation: int | None, signal_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{8,30}", signal_id):
        raise ValueError(f"signal id {signal_id!r} is not a hex signal id")
    if generation is not None and not 0 <= generation <= MAX_GENERATION:
        raise ValueError(f"generation {generation} out of 0..{MAX_GENERATION}")
    cid = f"wy{role}{'' if generation is None else generation}-{signal_id}"
    assert BINANCE_ID_RE.match(cid), cid
    return cid


def entry_id(signal_id: str) -> str:
    return _make("E", None, signal_id)


def stop_id(signal_id: str, generation: int) -> str:
    return _make("S", generation, signal_id)


def target_id(signal_id: str, generation: int) -> str:
    return _make("T", generation, signal_id)


def close_id(signal_id: str, n: int) -> str:
    return _make("X", n, signal_id)


def parse(client_id: str) -> ClientId | None:
    """The parts of one of OUR ids, or None for anything else (orders placed by hand or by other tools)."""
    m = _OURS_RE.match(client_id or "")
    if m is None:
        return None
    role = m.group(1)
    gen = int(m.group(2)) if m.group(2) else 0
    return ClientId(role, gen, m.group(3))  # type: ignore[arg-type]
