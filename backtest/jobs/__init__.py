"""Backtest jobs: what a job's child process runs (:mod:`backtest.jobs.child`), where its candles come from
(:mod:`backtest.jobs.data`), the summary it leaves (:mod:`backtest.jobs.summary`), and the shell commands
``python -m backtest jobs ...`` and ``python -m backtest worker`` (:mod:`backtest.jobs.cli`). The queue
itself (rows, runners, engines) is :mod:`src.jobs`."""
