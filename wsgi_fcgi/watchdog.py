"""Slow-request log and hard request timeout, checked by the I/O loop.

`--slow-request-timeout S`: php-fpm's slowlog with the Python stack: once per
request, the stack of the thread running it goes to the error log.

`--request-timeout S`: the client gets a 504 at once (through the
connection's write queue, so it cannot interleave with the app's output),
and `RequestTimeout` is raised asynchronously in the request's thread.
CPython delivers it only when that thread runs Python bytecode again: a
thread blocked in C (a socket read, `time.sleep`, a lock) does not see it.
If it has not let go after `STUCK_GRACE` seconds, the worker retires: it stops
accepting, lets its other requests finish and exits, and the master starts a
replacement.

The loop looks four times per the shorter timeout (php-fpm: three), and at
least once a second: a request is logged or stopped at most a quarter of its
timeout late.  Looking on the loop's one-second tick missed the requests
that crossed the slowlog and ended between two ticks.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import time
import traceback
from collections.abc import Callable

log = logging.getLogger("wsgi_fcgi")

STUCK_GRACE = 3.0
#: The loop looks at the running requests at least this often ...
LONGEST_LOOK_INTERVAL = 1.0
#: ... and at most this often, however short the timeouts.
SHORTEST_LOOK_INTERVAL = 0.02


class RequestTimeout(Exception):
    """Raised inside a request's thread when it ran longer than --request-timeout."""


def describe(request) -> str:
    params = dict(request.params)
    method = params.get("REQUEST_METHOD", "-")
    uri = params.get("REQUEST_URI", params.get("SCRIPT_NAME", "-"))
    return "%s %s" % (method, uri)


def thread_stack(thread) -> str:
    frame = sys._current_frames().get(thread.ident)
    if frame is None:
        return "  (no Python frame)"
    return "".join(traceback.format_stack(frame)).rstrip()


def interrupt(thread, exc_type) -> bool:
    """Raise `exc_type` in `thread` at its next bytecode (PyThreadState_SetAsyncExc)."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))
    if done > 1:  # more than one thread state touched: undo, as the C API docs ask
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)
        return False
    return done == 1


class Watchdog:
    """`server.on_tick` hook.  `on_slow()` / `on_stuck()` let the worker count and retire."""

    def __init__(self, server, slow_timeout: float = 0.0, request_timeout: float = 0.0,
                 on_slow: Callable[[], None] | None = None,
                 on_timeout: Callable[[], None] | None = None,
                 on_stuck: Callable[[], None] | None = None) -> None:
        self.server = server
        self.slow_timeout = slow_timeout
        self.request_timeout = request_timeout
        self.on_slow = on_slow or (lambda: None)
        self.on_timeout = on_timeout or (lambda: None)
        self.on_stuck = on_stuck or (lambda: None)
        self.interrupted: dict = {}  # thread -> (request, when)
        self.stuck_reported = False

    @property
    def interval(self) -> float:
        """Seconds between two looks (EventLoop.call_every)."""
        quarters = [timeout / 4 for timeout in (self.slow_timeout, self.request_timeout) if timeout]
        return max(SHORTEST_LOOK_INTERVAL, min([LONGEST_LOOK_INTERVAL, *quarters]))

    def __call__(self) -> None:
        now = time.monotonic()
        for thread in self.server.pool:
            request = thread.request
            if request is None:
                continue
            age = now - request.started
            if self.slow_timeout and age >= self.slow_timeout and not thread.slow_logged:
                thread.slow_logged = True
                self.on_slow()
                log.warning("slow request: %s running for %.1f s in %s; stack:\n%s",
                            describe(request), age, thread.name, thread_stack(thread))
            if self.request_timeout and age >= self.request_timeout:
                self._enforce(thread, request, age, now)
        for thread in list(self.interrupted):
            if self.interrupted[thread][0] is not thread.request:
                del self.interrupted[thread]

    def _enforce(self, thread, request, age: float, now: float) -> None:
        seen = self.interrupted.get(thread)
        if seen is None or seen[0] is not request:
            self.interrupted[thread] = (request, now)
            self.on_timeout()
            log.error("request timeout: %s ran %.1f s (--request-timeout %g): answering 504, "
                      "interrupting %s; stack:\n%s", describe(request), age, self.request_timeout,
                      thread.name, thread_stack(thread))
            request.abort(RequestTimeout("request timeout"))
            request.channel.end_from_loop(request, "504 Gateway Timeout", "Gateway Timeout")
            if thread.request is request:  # not if it finished meanwhile: it would hit the next one
                interrupt(thread, RequestTimeout)
        elif now - seen[1] >= STUCK_GRACE and not self.stuck_reported:
            self.stuck_reported = True
            log.error("request timeout: %s is stuck outside Python code (%s) for %.1f s after the "
                      "interrupt; this worker stops accepting and will be replaced; stack:\n%s",
                      describe(request), thread.name, now - seen[1], thread_stack(thread))
            self.on_stuck()
