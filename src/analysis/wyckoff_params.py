"""Parameters of the Wyckoff analyzer: every number its rules use, in one frozen dataclass.

All distances are in units of ATR (Wilder, 14, on log prices, measured on the bar BEFORE the one
being judged so a climax bar does not inflate its own yardstick) or of the range height W
(resistance - support, in log price). Volumes are relative volumes RV = volume / median of the
previous ``volume_window`` volumes. Durations are counted in bars, never in wall-clock time, so the
same rules serve 15m, 1h and 4h. ``docs/analysis.md`` has the same table for traders.

Few of these numbers are gates: most only shape the evidence ramps of the raw score (see
:mod:`src.analysis.wyckoff_ranges`), so a structure that misses one textbook feature scores lower
instead of disappearing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from src.analysis import timeframes
from src.analysis.pickling import register_frozen


@dataclass(frozen=True, slots=True)
class WyckoffParams:
    # primitives
    atr_period: int = 14
    volume_window: int = 50  # RV baseline: median of the previous 50 volumes
    warmup_bars: int = 50  # no event before this many candles were seen
    swing_k_atr: float = 1.25  # degree-1 zigzag: a pivot is confirmed by a 1.25 ATR reversal
    context_bars: int = 40  # prior move into a range: from the extreme of the 40 bars before its first pivot
    evidence_lag_bars: int = 150  # a range's first pivot more than 150 bars before its third carries no evidence

    # range formation from three alternating swing pivots (gates)
    formation_pivots: int = 9  # the first edge may lie up to 8 pivots before the retest (rule F1)
    max_ranges: int = 3  # candidate ranges alive per side; the weakest is dropped beyond this
    min_width_atr: float = 3.0  # W between 3 and 20 ATR
    max_width_atr: float = 20.0
    retest_under_atr: float = 0.5  # the third pivot returns to within [edge - 0.5 ATR, edge + 0.5 W]
    retest_inside_w: float = 0.5
    nest_margin_w: float = 0.25  # a new range inside [S - 0.25 W, Rz + 0.25 W] of a live one is nested in it
    same_range_w: float = 0.6  # ... and the same range when at least 0.6 W high (else an inner reading, rule F3)
    min_age_bars: int = 12  # no spring, phase-C LPS or SOS before the range is 12 bars old (from its first pivot)
    max_range_bars: int = 600  # a range older than 600 bars expires (scaled per timeframe)

    # evidence ramps for the range (0 -> 1), each floored so a missing phase-A feature only lowers the score
    climax_rv_lo: float = 2.5  # max RV of the bars around the support low: ramp 2.5 -> 5
    climax_rv_hi: float = 5.0
    climax_spread_lo: float = 1.5  # their high - low: ramp 1.5 -> 3.5 ATR
    climax_spread_hi: float = 3.5
    climax_floor: float = 0.25
    context_lo: float = 5.0  # prior move into the range: ramp 5 -> 15 ATR
    context_hi: float = 15.0
    context_floor: float = 0.23
    bias_floor: float = 0.3  # the other side's stronger reading of an overlapping range lowers "bias" to 0.3 at most
    repeat_factor: float = 0.6  # rule R1: the k-th setup of one kind in one range scores x 0.6^(k-1)
    width_lo: float = 5.0  # range height: ramp 5 -> 10 ATR
    width_hi: float = 10.0
    mature_bars: int = 120  # age ramp 15 -> 120 bars (scaled per timeframe)
    young_bars: int = 15
    tests_lo: float = 5.0  # touches of either edge: ramp 5 -> 11
    tests_hi: float = 11.0
    sos_rv_lo: float = 1.5  # SOS bar RV: ramp 1.5 -> 4 (the textbook SOS comes on 2-3x volume; wide bars carry 2x anyway)
    sos_rv_hi: float = 4.0
    range_w_width: float = 0.45  # range membership = 0.45 width + 0.30 age + 0.25 touches
    range_w_age: float = 0.30
    range_w_tests: float = 0.25
    test_zone_w: float = 0.25  # swing lows within S + 0.25 W test support (highs within Rz - 0.25 W test resistance)

    # phase B details
    ua_atr: float = 0.1  # UA: high > Rz + 0.1 ATR, close back < Rz within 2 bars
    ua_fail_bars: int = 2
    evr_progress_max: float = 0.7  # effort vs result: progress <= 0.7 x the previous same-direction leg's
    evr_effort_min: float = 1.2  # ... while summed RV >= 1.2 x

    # spring / shakeout (UTAD mirrored)
    spring_min_atr: float = 0.1  # a probe starts with a low < S - 0.1 ATR
    spring_deep_w: float = 0.5  # deeper than 0.5 W (and 1.5 ATR) is a shakeout
    spring_deep_atr: float = 1.5
    breakdown_w: float = 1.0  # deeper than max(1 W, 4 ATR): breakdown, the range fails
    breakdown_atr: float = 4.0
    reclaim_bars: int = 24  # rule S1: a close >= S within 24 bars of the probe's first bar (real flushes take 10-16)
    reclaim_fade_bars: int = 10  # ... its evidence fades from 1 (reclaimed within a bar) to 0.4 at 10 bars and later
    light_rv: float = 1.0  # spring volume class: light < 1.0 <= moderate <= 1.8 < heavy
    heavy_rv: float = 1.8

    # test of the spring
    test_max_bars: int = 20
    test_under_atr: float = 0.1
    test_fail_atr: float = 0.25  # a low < spring low - 0.25 ATR fails phase C
    test_max_effort: float = 0.7  # test leg mean RV <= max(0.7 x spring RV, 1.0)
    test_max_w: float = 0.5

    # phase-C LPS (schematic #2, no spring): a higher low on low volume
    lpsc_min_w: float = 0.1
    lpsc_max_w: float = 0.35
    lpsc_max_effort: float = 0.8
    lpsc_prior_high_w: float = 0.75

    # sign of strength / weakness (SOS / SOW): the first close over Rz + 0.1 ATR after maturity
    sos_break_atr: float = 0.1
    sos_fail_atr: float = 0.5  # close < Rz - 0.5 ATR within 5 bars: failed breakout, back to B
    sos_fail_bars: int = 5
    runaway_w: float = 1.0  # close > Rz + 1 W with no SOS: the range is left without a signal

    # last point of support / supply (LPS, BU / LPSY)
    lps_bu_atr: float = 0.5
    lps_min_w: float = 0.5
    lps_max_effort: float = 0.8
    lps_max_retrace: float = 0.618
    d_max_bars: int = 150
    markup_w: float = 2.0

    # risk
    stop_buffer_atr: float = 0.25
    sos_stop_atr: float = 1.0

    @classmethod
    def for_timeframe(cls, timeframe: str) -> WyckoffParams:
        """Defaults with the range-duration numbers scaled to the timeframe (everything else is in
        ATR/range units already): the age ramp ends at 192/160/120/100/80 bars and ranges expire after
        1000/800/600/450/300 bars, up to 15m, 30m, 1h, 2h and beyond."""
        minutes = timeframes.interval_ms(timeframe) // 60_000 if timeframes.is_interval(timeframe) else 60
        for limit, lo, hi in ((15, 192, 1000), (30, 160, 800), (60, 120, 600), (120, 100, 450)):
            if minutes <= limit:
                return cls(mature_bars=lo, max_range_bars=hi)
        return cls(mature_bars=80, max_range_bars=300)

    def fingerprint(self) -> str:
        """16 hex chars over every parameter (changes whenever any number changes)."""
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


register_frozen(WyckoffParams)

