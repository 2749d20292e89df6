"""Parameters of the Wyckoff analyzer: every number its rules use, in one frozen dataclass.

All distances are in units of ATR (Wilder, 14, on log prices, measured on the bar BEFORE the one
being judged so a climax bar does not inflate its own yardstick) or of the range height W
(resistance - support, in log price). Volumes are relative volumes RV = volume / median of the
previous ``volume_window`` volumes. Durations are counted in bars, never in wall-clock time, so the
same rules serve 15m, 1h and 4h. ``docs/analysis.md`` has the same table for traders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from src.analysis import timeframes


@dataclass(frozen=True, slots=True)
class WyckoffParams:
    # primitives
    atr_period: int = 14
    volume_window: int = 50  # RV baseline: median of the previous 50 volumes
    warmup_bars: int = 50  # no event before this many candles were seen
    swing_k_atr: float = 1.25  # degree-1 zigzag: a pivot is confirmed by a 1.25 ATR reversal

    # selling / buying climax (SC / BC): a 1-3 bar cluster
    climax_bars: int = 3
    climax_min_rv: float = 2.5  # max RV in the cluster
    climax_min_range_atr: float = 2.5  # cluster high - cluster low
    climax_min_rstar: float = 2.0  # max bar range / ATR in the cluster
    climax_lookback: int = 50  # the cluster low is a new 50-bar low
    prior_move_bars: int = 30  # ... after a decline of >= 4 ATR from the 30-bar high before it
    prior_move_atr: float = 4.0
    climax_confirm_bars: int = 3  # a close >= cluster midpoint within 3 bars after it, or
    climax_confirm_cp: float = 0.6  # ... the next bar closes in the top 40 % of its range
    climax_fail_atr: float = 1.0  # a close < climax low - 1 ATR within 5 bars kills the case
    climax_fail_bars: int = 5
    ps_lookback: int = 40  # PS: a swing low with leg max RV >= 1.5 within 40 bars before the climax
    ps_min_rv: float = 1.5

    # automatic rally / reaction (AR): fixes the other edge of the range
    ar_max_bars: int = 25
    ar_min_atr: float = 2.0  # rally >= max(2 ATR, 0.3 x the prior decline)
    ar_min_frac_prior: float = 0.3
    min_width_atr: float = 2.0  # a range narrower than 2 ATR or wider than 20 ATR is not traded
    max_width_atr: float = 20.0

    # secondary test (ST) and phase A/B breakdowns
    st_below_atr: float = 0.5  # ST low within [S - 0.5 ATR, S + 0.35 W]
    st_above_w: float = 0.35
    st_max_effort: float = 0.8  # leg mean RV <= 0.8 x climax max RV
    breakdown_atr: float = 1.5  # phase A: a close < S - 1.5 ATR fails the case

    # phase B
    b_min_bars: int = 10  # phase B lasts >= max(10 bars, length of phase A) before phase C
    min_range_bars: int = 30  # ... and phase C / D need a range >= 30 bars old (from the climax)
    max_range_bars: int = 600  # a case older than 600 bars (from the climax) expires
    test_zone_w: float = 0.2  # a swing low within S + 0.2 W counts as a test of support
    ua_atr: float = 0.1  # UA: high > Rz + 0.1 ATR, close back < Rz within 2 bars
    ua_fail_bars: int = 2
    evr_progress_max: float = 0.7  # effort vs result: progress <= 0.7 x the previous same-direction leg's
    evr_effort_min: float = 1.2  # ... while summed RV >= 1.2 x

    # spring / shakeout (UTAD mirrored)
    spring_min_atr: float = 0.1  # low < S - 0.1 ATR
    spring_max_atr: float = 1.5  # penetration (0.1, 1.5] ATR: spring; (1.5, 3] ATR: terminal shakeout
    shakeout_max_atr: float = 3.0  # deeper than 3 ATR: breakdown
    reclaim_bars: int = 3  # a close >= S within 3 bars of the first bar below S
    light_rv: float = 1.0  # spring volume class: light < 1.0 <= moderate <= 1.8 < heavy
    heavy_rv: float = 1.8

    # test of the spring
    test_max_bars: int = 20  # the test's swing low comes within 20 bars of the spring
    test_under_atr: float = 0.1  # test low >= spring low - 0.1 ATR
    test_fail_atr: float = 0.25  # a low < spring low - 0.25 ATR fails phase C
    test_max_effort: float = 0.7  # test leg mean RV <= max(0.7 x spring RV, 1.0)
    test_max_w: float = 0.5  # the test low stays in the lower half of the range

    # phase-C LPS (schematic #2, no spring): a higher low on low volume
    lpsc_min_w: float = 0.1
    lpsc_max_w: float = 0.35
    lpsc_max_effort: float = 0.8  # leg mean RV <= 0.8 x mean of the phase-B down legs
    lpsc_prior_high_w: float = 0.75  # the swing high before it reached S + 0.75 W

    # sign of strength / weakness (SOS / SOW)
    sos_break_atr: float = 0.25  # close > Rz + 0.25 ATR
    sos_min_rv: float = 1.5
    sos_min_rstar: float = 1.2
    sos_min_cp: float = 0.6
    sos_fail_atr: float = 0.5  # close < Rz - 0.5 ATR within 5 bars: failed breakout, back to B
    sos_fail_bars: int = 5
    runaway_w: float = 1.0  # close > Rz + 1 W with no SOS: the range is left without a signal

    # last point of support / supply (LPS, BU / LPSY)
    lps_bu_atr: float = 0.5  # BU: pullback low >= Rz - 0.5 ATR
    lps_min_w: float = 0.5  # LPS inside the range: low >= S + 0.5 W
    lps_max_effort: float = 0.8  # pullback leg mean RV <= 0.8 x SOS leg mean RV
    lps_max_retrace: float = 0.618  # pullback retraces <= 61.8 % of the SOS leg
    d_max_bars: int = 150  # phase D without an LPS or markup for 150 bars expires
    markup_w: float = 2.0  # a close > Rz + 2 W in phase D is markup even without an LPS

    # risk
    stop_buffer_atr: float = 0.25  # stops sit 0.25 ATR beyond the invalidating extreme
    sos_stop_atr: float = 1.0  # SOS stop: Rz - 1 ATR (back inside the range = failed breakout)

    @classmethod
    def for_timeframe(cls, timeframe: str) -> WyckoffParams:
        """Defaults with the range-duration limits scaled to the timeframe (everything else is in
        ATR/range units already): min/max range length 48/1000 bars up to 15m, 40/800 at 30m,
        30/600 at 1h, 25/450 at 2h, 20/300 from 4h up."""
        minutes = timeframes.interval_ms(timeframe) // 60_000 if timeframes.is_interval(timeframe) else 60
        for limit, lo, hi in ((15, 48, 1000), (30, 40, 800), (60, 30, 600), (120, 25, 450)):
            if minutes <= limit:
                return cls(min_range_bars=lo, max_range_bars=hi)
        return cls(min_range_bars=20, max_range_bars=300)

    def fingerprint(self) -> str:
        """16 hex chars over every parameter (changes whenever any number changes)."""
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
