"""Where the trader says things a human must see: positions opened and closed, pauses, alarms.

``level``: ``info`` (a position opened/closed), ``warning`` (a pause, a refused entry worth knowing),
``alarm`` (needs a human now: a position without a stop, a position the bot did not open, a size
mismatch, an IP ban). The Discord implementation lives in src/bot/discord/trading_alerts.py; without
Discord, alerts go to the log (and, like everything, to the audit log).
"""

from __future__ import annotations

from typing import Literal, Protocol

import structlog

AlertLevel = Literal["info", "warning", "alarm"]
log = structlog.get_logger(__name__)


class AlertSink(Protocol):
    async def alert(self, level: AlertLevel, text: str) -> None: ...


class LogAlerts:
    """Alerts as log lines (always on; the Discord sink comes in addition)."""

    def __init__(self) -> None:
        self.sent: list[tuple[AlertLevel, str]] = []

    async def alert(self, level: AlertLevel, text: str) -> None:
        self.sent.append((level, text))
        if len(self.sent) > 1000:
            del self.sent[:500]
        if level == "alarm":
            log.error("TRADING ALARM", text=text)
        elif level == "warning":
            log.warning("trading_alert", text=text)
        else:
            log.info("trading_alert", text=text)


class FanOutAlerts:
    """Every alert to every sink; a failing sink never stops the others."""

    def __init__(self, *sinks: AlertSink) -> None:
        self.sinks = list(sinks)

    def add(self, sink: AlertSink) -> None:
        self.sinks.append(sink)

    async def alert(self, level: AlertLevel, text: str) -> None:
        for sink in self.sinks:
            try:
                await sink.alert(level, text)
            except Exception as exc:
                log.warning("trading_alert_sink_failed", sink=type(sink).__name__, error=f"{type(exc).__name__}: {exc}")
