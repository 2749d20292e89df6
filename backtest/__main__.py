"""Entry point: ``python -m backtest <command> ...`` (see :mod:`backtest.cli`)."""

from backtest.cli import main

raise SystemExit(main())
