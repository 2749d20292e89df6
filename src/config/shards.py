"""Symbol shards (issue 16): ``SHARD=i/N`` splits the streams over N instances by a stable hash of the symbol.

A symbol belongs to shard ``crc32(symbol) mod N``: the assignment depends on the name only, never on its
position in a list, so a symbol Binance lists (or delists) moves no other symbol to another shard, and every
instance computes the same split without talking to the others. Shard ``i`` of ``N`` streams every
timeframe of its symbols; the shards together cover each symbol exactly once.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
MAX_SHARDS = 256


def shard_of(symbol: str, count: int) -> int:
    """The shard (0..count-1) of ``symbol`` (upper-cased): CRC-32 of its name modulo ``count``."""
    return zlib.crc32(symbol.upper().encode()) % count


def in_shard(symbol: str, shard: tuple[int, int]) -> bool:
    index, count = shard
    return count <= 1 or shard_of(symbol, count) == index


def select(symbols: Iterable[str], shard: tuple[int, int]) -> tuple[str, ...]:
    """The symbols of ``shard`` (index, count), in their given order."""
    return tuple(s for s in symbols if in_shard(s, shard))


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N <= MAX_SHARDS; ValueError otherwise."""
    m = _SHARD_RE.match(text)
    if not m:
        raise ValueError(f"expected i/N, e.g. 0/2, got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
        raise ValueError(f"expected 0 <= i < N <= {MAX_SHARDS}, got {index}/{count}")
    return index, count


def describe(shard: tuple[int, int]) -> str:
    return "all symbols" if shard[1] <= 1 else f"shard {shard[0]}/{shard[1]}"
