"""Trading (issue 13, SPEC 9): off by default; paper, demo and live execution of trade calls.

Layers (imports point down): ``errors``, ``client_ids``, ``filters``, ``signing``, ``clock``, ``budget`` (pure or
nearly) <- ``rest`` (signed HTTP) <- ``exchange`` (typed Binance USDT-M endpoints) and ``events`` (user-data
events) <- ``user_stream`` (listenKey + /private WebSocket), ``reconcile`` (what to repair), ``safety``
(limits and the pause), ``audit`` (every action written down) <- ``paper`` / ``live`` (the traders) <-
``service`` (built from the configuration; what the app and Discord see).

The exchange is the source of truth; nothing is retried blindly: an answer that was lost is resolved by
querying the client order id, never by sending the order again.
"""
