"""Times across PostgREST (the Supabase REST store and its trading tables): epoch ms <-> timestamptz text, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def ms_to_ts(ms: int) -> str:
    """Epoch ms -> ISO-8601 UTC text for a timestamptz column (exact integer arithmetic)."""
    return (_EPOCH + ms * _MS).isoformat(timespec="milliseconds")


def ts_to_ms(text: str) -> int:
    """PostgREST timestamptz text ('2023-11-14T22:00:00.12+00:00', 'Z', or naive = UTC) -> epoch ms, exactly."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS
