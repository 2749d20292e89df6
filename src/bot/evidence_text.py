"""How the bot words a signal's kind, evidence and track record: one vocabulary for the console, the
Discord embeds and the commands (pure functions, no I/O).

What a user reads about a signal is the evidence model's out-of-sample estimate of the trade's net R
after fees (SPEC 5a), never an analyzer score:

- the kind: ``TRADE CALL``, or ``WATCH NOTE — not a trade call``;
- ``P(win) 46 % · E[R] +0.05 R [-0.15, +0.25] (80 %, avg of 20)``: P(net R > 0), the expected net R and its interval
  (central coverage in brackets);
- the pattern's track record: the out-of-sample backtest (n, mean net R, 95 % CI) and the live record
  from the store (n graded, mean net R).
"""

from __future__ import annotations

import math

from src.analysis.gate import GATE_REASONS
from src.analysis.types import Evidence, Signal, SignalKind

KIND_LABELS: dict[SignalKind, str] = {
    "trade": "TRADE CALL",
    "watch": "WATCH NOTE — not a trade call",
    "gated": "GATED — not posted",
}
KIND_SHORT: dict[SignalKind, str] = {"trade": "TRADE", "watch": "WATCH", "gated": "gated"}

def kind_label(kind: SignalKind) -> str:
    return KIND_LABELS.get(kind, str(kind).upper())


def gate_reason_text(code: str) -> str:
    """The reason code in words ('' for none)."""
    if not code:
        return ""
    text = GATE_REASONS.get(code)
    if text is None:
        return code.replace("_", " ")
    # the kind is shown beside the reason, so the gate's "gated: " / "watch note: " prefix would say it twice
    return text.split(": ", 1)[1] if text.startswith(("gated: ", "watch note: ")) else text


def _signed(value: float) -> str:
    """'+0.05', '-1.00'; a value that rounds to zero reads '+0.00', never '-0.00'."""
    rounded = round(value, 2)
    return f"{rounded if rounded != 0 else 0.0:+.2f}"


def fmt_r(value: float | None) -> str:
    """A net R multiple with its sign: '+0.05 R', '-1.00 R', 'n/a'."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{_signed(value)} R"


def fmt_prob(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value * 100:.0f} %"


def _interval(lo: float | None, hi: float | None) -> str:
    def one(v: float | None) -> str:
        return "n/a" if v is None or not math.isfinite(v) else _signed(v)

    return f"[{one(lo)}, {one(hi)}]"


def evidence_line(ev: Evidence | None) -> str:
    """'P(win) 46 % · E[R] +0.05 R [-0.15, +0.25] (80 %, avg of 20)': the interval is where the average net R
    of ``reference_n`` such signals lands (the evidence model's definition), so the text says so."""
    if ev is None:
        return "no evidence assessment (no evidence model was loaded when it was made)"
    coverage = ""
    if math.isfinite(ev.interval) and ev.interval > 0:
        of = f", avg of {ev.reference_n}" if ev.reference_n > 0 else ""
        coverage = f" ({ev.interval * 100:.0f} %{of})"
    return f"P(win) {fmt_prob(ev.p_win)} · E[R] {fmt_r(ev.expected_r)} {_interval(ev.expected_r_lo, ev.expected_r_hi)}{coverage}"


def backtest_record_text(n: int, mean_r: float | None, ci: tuple[float, float] | None) -> str:
    if n <= 0:
        return "backtest (out of sample): no trades"
    ci_text = "" if ci is None else f", 95 % CI {_interval(ci[0], ci[1])}"
    return f"backtest (out of sample): n {n}, mean {fmt_r(mean_r)}{ci_text}"


def live_record_text(n: int, mean_r: float | None) -> str:
    if n <= 0:
        return "live: no graded signals yet"
    return f"live: n {n}, mean {fmt_r(mean_r)}"


def track_record_lines(ev: Evidence | None) -> tuple[str, str]:
    """(backtest line, live line) of the pattern's track record as the evidence carried it."""
    if ev is None:
        return ("backtest (out of sample): not available", "live: not available")
    return (backtest_record_text(ev.backtest_n, ev.backtest_mean_r, ev.backtest_ci), live_record_text(ev.live_n, ev.live_mean_r))


def rr_text(signal: Signal) -> str:
    """'R:R 1 : 1.50 to TP1' (reward to the first target over the risk)."""
    rr = signal.risk_reward
    return "R:R n/a" if rr is None or not math.isfinite(rr) else f"R:R 1 : {rr:.2f} to TP1"


def why_not_a_trade_call(signal: Signal) -> str:
    """For a watch note or a gated candidate: the gate's reason in words ('' for a trade call)."""
    if signal.kind == "trade":
        return ""
    return gate_reason_text(signal.gate_reason) or "the gate gave no reason"
