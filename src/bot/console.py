"""Console output: one block per signal and a periodic one-line status, on stdout (logs go to stderr)."""

from __future__ import annotations

import sys
from typing import TextIO

from src.analysis.types import Signal
from src.bot.evidence_text import evidence_line, kind_label, rr_text, track_record_lines, why_not_a_trade_call
from src.bot.sinks import SignalBatch
from src.bot.status import StatusSnapshot


def format_signal(s: Signal, historical: bool = False) -> str:
    """A few readable lines: the kind and headline, the evidence, levels, the track record, reasons."""
    targets = ", ".join(f"{t:.6g}" for t in s.take_profits) or "-"
    tag = " (caught up, not live)" if historical else ""
    backtest, live = track_record_lines(s.evidence)
    lines = [
        f"{kind_label(s.kind)}: {s.direction} {s.symbol} {s.timeframe} {s.pattern}{tag} @ {s.generated_at}",
        f"  {evidence_line(s.evidence)} · {rr_text(s)}",
    ]
    why = why_not_a_trade_call(s)
    if why:
        lines.append(f"  why not a trade call: {why}")
    lines += [
        f"  entry {s.entry:.6g}  stop {s.stop_loss:.6g}  targets {targets}  id {s.id}",
        f"  track record {s.pattern} {s.timeframe}: {backtest} · {live}",
    ]
    lines.extend(f"  - {r}" for r in s.reasons[:8])
    return "\n".join(lines)


def format_status(st: StatusSnapshot) -> str:
    """One line: uptime, streams fresh/total, candles, signals, store, discord."""
    fresh = sum(1 for s in st.streams if s.fresh)
    connected = sum(1 for c in st.connections if c.connected)
    up = int(st.uptime_s)
    parts = [
        f"STATUS up {up // 3600}h{up % 3600 // 60:02d}m{up % 60:02d}s",
        f"mode {st.mode}{'' if st.warmed_up else ' (warming up)'}",
        *([f"{st.role_text}, {st.shard}"] if st.role != "single" or st.shard != "all symbols" else []),
        f"streams {fresh}/{len(st.streams)} fresh",
    ]
    if st.connections:
        parts.append(f"ws {connected}/{len(st.connections)} up")
    parts += [
        f"trade calls {st.trade_calls} · watch notes {st.watch_notes} · candidates {st.candidates}",
        f"last {st.last_signal_at or '-'}",
        f"store {st.store_backend} {'ok' if st.store_healthy else 'DOWN'}"
        + (f" spool {st.spool_depth}" if st.spool_depth else ""),
        f"cache {st.cache}",
        f"discord {st.discord}",
        f"trading {st.trading}",
    ]
    if st.problems:
        parts.append("PROBLEM " + "; ".join(st.problems))
    return " | ".join(parts)


class ConsoleSink:
    """SignalSink printing every signal it is given (the app routes trade calls and, per WATCH_NOTES, watch notes)."""

    name = "console"

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.printed = 0

    async def publish(self, batch: SignalBatch) -> None:
        for s in batch.signals:
            print(format_signal(s, batch.historical), file=self.out, flush=True)
            self.printed += 1

    async def close(self) -> None:
        self.out.flush()
