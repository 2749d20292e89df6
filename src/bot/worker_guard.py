"""Worker processes end with the bot: an initializer for ``ProcessPoolExecutor`` workers (the chart renderer).

A ``kill -9`` of the bot runs no cleanup, and a pool worker blocked on its task queue would live on as an
orphan (~100 MB each, one per killed run). :func:`die_with_parent` makes the worker follow its parent:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (via ctypes): the kernel kills the worker the moment the
  thread that started it dies; the bot starts workers from its event-loop (main) thread;
- everywhere: a daemon thread checks once a second that the parent is still ``parent_pid`` and exits the
  worker otherwise (covers other systems and a pool grown from another thread);
- a parent that died before the initializer ran is noticed at once (the worker exits immediately).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_S = 1.0


def die_with_parent(parent_pid: int) -> None:
    """Initializer: end this worker process when ``parent_pid`` (the bot) is gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the watchdog thread below still works
            pass
    if os.getppid() != parent_pid:  # the parent died before we got here (re-parented to init)
        os._exit(0)
    threading.Thread(target=_watch, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent_pid:
            os._exit(0)
