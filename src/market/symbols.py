"""SYMBOLS against Binance: which configured names are TRADING USDT-M perpetuals, and for the others the
name the user most likely meant (``BTC`` -> ``BTCUSDT``, ``ETHUSTD`` -> ``ETHUSDT``).

Used at start (the feed reports unknown symbols and stops with exit 2 when none is left) and by
``python -m src.bot.config --check --online``.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Collection, Iterable

from src.config import Config
from src.config.check import OnlineResult
from src.config.settings import usdt_m_name
from src.market.binance_rest import BinanceRestClient, BinanceRestError, RestGeoBlocked, RestSettings


def suggest(symbol: str, tradable: Collection[str]) -> str | None:
    """The tradable symbol ``symbol`` most likely means: its USDT-M spelling, else a close match (>= 75 %)."""
    guess = usdt_m_name(symbol)
    if guess != symbol and guess in tradable:
        return guess
    close = difflib.get_close_matches(symbol, sorted(tradable), n=1, cutoff=0.75)
    return close[0] if close else None


def unknown_symbol_text(symbol: str, tradable: Collection[str]) -> str:
    hint = suggest(symbol, tradable)
    return (f"{symbol} is not a TRADING USDT-M perpetual on Binance"
            + (f" (did you mean {hint}?)" if hint else " (check the name on binance.com/futures)"))


def no_valid_symbol_text(unknown: Iterable[str], tradable: Collection[str]) -> str:
    names = "; ".join(unknown_symbol_text(s, tradable) for s in unknown)
    return f"no valid symbol to stream: {names}. Set SYMBOLS to Binance USDT-M perpetual names (e.g. BTCUSDT) or ALL"


async def check_symbols(config: Config) -> OnlineResult:
    """Check SYMBOLS against exchangeInfo (2 tries, 10 s each): problems for unknown names, or why Binance
    could not be asked."""
    settings = RestSettings(base_url=config.binance_rest_url, max_attempts=2, request_timeout_s=10.0,
                            backoff_base_s=0.5, backoff_cap_s=1.0)
    async with BinanceRestClient(settings) as rest:
        try:
            tradable = await rest.tradable_usdt_perpetuals()
        except RestGeoBlocked as exc:
            return OnlineResult([str(exc)])
        except BinanceRestError as exc:
            return OnlineResult([], unreachable=f"{config.binance_rest_url}: {exc}")
    if config.symbols_all:
        return OnlineResult([], summary=f"symbols checked against Binance: ALL = {len(tradable)} tradable")
    unknown = [s for s in config.symbols if s not in tradable]
    problems = [f"SYMBOLS: {unknown_symbol_text(s, tradable)}" for s in unknown]
    ok = len(config.symbols) - len(unknown)
    return OnlineResult(problems, summary=f"symbols checked against Binance: {ok} of {len(config.symbols)} tradable")


def check_symbols_online(config: Config) -> OnlineResult:
    """:func:`check_symbols` for the synchronous ``--check`` command."""
    return asyncio.run(check_symbols(config))
