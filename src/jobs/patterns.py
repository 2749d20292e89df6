"""Pattern names users may type for a job: ``spring``, ``springs``, ``wyckoff_spring``, ``wave3`` ... (pure)."""

from __future__ import annotations

import re

from src.analysis.wyckoff import ALL_PATTERNS as WYCKOFF_PATTERNS

# the Elliott analyzer's setups (src/analysis/elliott.py, ElliottAnalyzer._setup; also backtest research's list)
ELLIOTT_PATTERNS: tuple[str, ...] = ("elliott_wave3", "elliott_wave5", "elliott_abc")
KNOWN_PATTERNS: tuple[str, ...] = (*WYCKOFF_PATTERNS, *ELLIOTT_PATTERNS)
__all__ = ["ELLIOTT_PATTERNS", "KNOWN_PATTERNS", "WYCKOFF_PATTERNS", "resolve_pattern", "short_name"]


def short_name(pattern: str) -> str:
    return pattern.removeprefix("wyckoff_").removeprefix("elliott_")


def resolve_pattern(text: str) -> str | None:
    """The pattern meant by ``text`` (case-insensitive, with or without prefix, a plural 's' allowed), or None."""
    clean = re.sub(r"[^a-z0-9]", "", text.lower())[:40]  # 'wave-5', 'utad_test', 'UTAD test' all match
    if not clean:
        return None
    for cand in (clean, clean.removesuffix("s"), clean.removesuffix("es")):
        for p in KNOWN_PATTERNS:
            if cand in (p.replace("_", ""), short_name(p).replace("_", "")):
                return p
    return None
