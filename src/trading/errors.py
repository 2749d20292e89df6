"""The trading error hierarchy: what a caller may do next depends on which one it gets.

- :class:`NotSent` and its subclasses: the request never reached the matching engine (refused locally,
  refused by the rate limiter, connection not established) -- nothing happened, it may be sent again;
- :class:`ExchangeError`: Binance answered with an error code -- the request was REFUSED, nothing
  happened (``ClockSkew`` is -1021, fixed by re-measuring the server-time offset);
- :class:`AmbiguousResult`: the request may or may not have been executed (timeout, 5xx, connection
  reset after it left) -- it must NEVER be re-sent; the order is resolved by its client id.
"""

from __future__ import annotations


class TradingError(Exception):
    """Base of every trading error."""


class NotSent(TradingError):
    """The request was not sent, or was refused before it could do anything."""


class LocalRejection(NotSent):
    """Refused by the bot before sending (filters, limits, configuration)."""


class RateLimited(NotSent):
    """Binance answered 429 (or our own budget is exhausted): wait ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IpBanned(NotSent):
    """Binance answered 418: this IP is banned until ``until_ms`` (server time). Trading stops."""

    def __init__(self, message: str, until_ms: int) -> None:
        super().__init__(message)
        self.until_ms = until_ms


class ExchangeUnreachable(NotSent):
    """The connection could not be established: the request never left."""


class ExchangeError(TradingError):
    """Binance refused the request: ``code`` is its error code (e.g. -2019), ``http_status`` the status."""

    def __init__(self, code: int, msg: str, http_status: int) -> None:
        super().__init__(f"Binance error {code}: {msg} (HTTP {http_status})")
        self.code = code
        self.msg = msg
        self.http_status = http_status


class ClockSkew(ExchangeError):
    """-1021: the timestamp was outside recvWindow of Binance's clock."""


class AmbiguousResult(TradingError):
    """The request may have been executed: resolve it by its client id, never re-send it."""


# Binance USDT-M error codes the bot acts on
TIMESTAMP_OUTSIDE_RECV_WINDOW = -1021
INVALID_SIGNATURE = -1022
INVALID_API_KEY = -2015
NO_SUCH_ORDER = -2013
UNKNOWN_ORDER_SENT = -2011
MARGIN_INSUFFICIENT = -2019
WOULD_IMMEDIATELY_TRIGGER = -2021
REDUCE_ONLY_REJECTED = -2022
NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
USE_ALGO_ORDER_API = -4120
CLOSE_POSITION_ORDER_EXISTS = -4130
DUPLICATE_CLIENT_ORDER_ID = -4116
LISTEN_KEY_NOT_FOUND = -1125
