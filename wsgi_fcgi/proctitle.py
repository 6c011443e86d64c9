"""Process titles, so that `ps` tells the master from the workers:

    wsgi-fcgi: master [myapp:app]        (ps -o args, /proc/PID/cmdline)
    wsgi-fcgi: worker 2 [myapp:app]
    wsgi-fcgi / wsgi-fcgi w2             (ps -o comm, top, /proc/PID/comm: 15 bytes at most)

The full title needs the optional `setproctitle` package (`pip install
'wsgi-fcgi[setproctitle]'`); the short name is set with prctl(PR_SET_NAME)
in any case (Linux).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_PR_SET_NAME = 15
_COMM_SIZE = 15


def set_title(role: str, short: str, pool: str) -> None:
    """`role`: "master" or "worker 2"; `short`: the 15-byte comm name."""
    try:
        import setproctitle
    except ImportError:
        pass
    else:
        setproctitle.setproctitle("wsgi-fcgi: %s [%s]" % (role, pool))
    set_comm(short)


def set_comm(name: str) -> bool:
    """The calling thread's name (the process's, from the main thread);
    threads started afterwards inherit it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:_COMM_SIZE]), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def master_title(pool: str) -> None:
    set_title("master", "wsgi-fcgi", pool)


def worker_title(number: int, pool: str) -> None:
    set_title("worker %d" % number, "wsgi-fcgi w%d" % number, pool)
