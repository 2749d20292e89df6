"""``python -m backtest research``: the event study of issue 10 (see backtest/research/cli.py)."""
