"""The backtest job queue: requests from Discord or the shell, run by workers anywhere, results kept in the store.

- :mod:`src.jobs.model`: the request, the job row and its states, the limits;
- :mod:`src.jobs.sqlite_jobs` / :mod:`src.jobs.postgres_jobs`: the job rows (migration 007) in the configured
  database; every state change is one conditional UPDATE, so a job ends exactly once;
- :mod:`src.jobs.supervisor`: one attempt of one job in a child process (``python -m backtest.jobs.child``),
  with heartbeats, progress and cancellation; the event loop never runs the backtest itself;
- :mod:`src.jobs.local_runner`: the zero-config engine (SQLite): a pool of child processes inside the bot
  (or ``python -m backtest worker`` on the same machine);
- :mod:`src.jobs.pg_queue`: the Postgres engine: procrastinate (locks, retries, worker heartbeats, stalled-job
  recovery) with ``python -m backtest worker`` on any machine that reaches the database.

This package sits beside storage: it imports config and storage, never the bot or the backtest code (the
child process is started by module name).
"""
