"""The request threads, and who runs the selector.

Handing each request to a pool thread costs two thread switches and a fight
for the GIL (about a third of the CPU of a small request).  So the loop
thread runs requests whose input is complete itself, at the end of a loop
round.  While it does, nobody polls; when such a request takes longer than
INLINE_TAKEOVER, the standby (the thread in `Server.serve_forever`) takes the
selector over and hands requests to the pool until the loop thread is free
again, then gives the selector back.

The standby looks at most every INLINE_TAKEOVER, and when a request is
running, sleeps until that request's deadline: a request that runs longer is
running at one of its looks, so it is taken over INLINE_TAKEOVER after it
started, and under load the standby wakes (and takes the GIL from the loop
thread) at most a hundred times a second.  After a second without inline
requests it sleeps until the loop thread runs one again, or for a second at
most, so an idle server wakes up twice a second (the loop's tick, for
heartbeats and timers, and this).  The standby is the main thread, the only
one where Python runs signal handlers, and a signal does not always end its
wait: gunicorn installs its SIGTERM handler with SA_RESTART, so an idle
worker that slept until a request came would not stop before gunicorn
killed it.

Running requests inline serialises them: right for an app that computes
(the GIL serialises it anyway), wrong for one that waits (a database, a
file, another service), whose waits the threads should overlap.  So the loop
thread times its inline requests, wall clock against the time it was
runnable (`RunnableClock`); when they spend most of their time waiting,
every request goes to the pool threads for a while, then inline runs are
tried again.  The while doubles from HANDOFF_PERIOD up to
MAX_HANDOFF_PERIOD each time the try finds the app still waiting: a try
serialises a window's worth of requests (3% of the throughput of an app
that waits 5 ms per request, tried every second).  The try ends with the
request that fills the window; the rest of its round go to the pool threads.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING

from .watchdog import RequestTimeout

if TYPE_CHECKING:
    from .request import Request
    from .server import Server

log = logging.getLogger("wsgi_fcgi")

#: A request the loop thread runs itself for longer than this makes the
#: standby take the selector over.
INLINE_TAKEOVER = 0.010
#: Inline requests are judged in windows of this much wall-clock time ...
_WINDOW = 0.020
#: ... and a window in which they spent more than this share of it off the
#: CPU sends requests to the pool threads for HANDOFF_PERIOD seconds, twice
#: as long after each window that finds the app still waiting, up to
#: MAX_HANDOFF_PERIOD.
_WAITING_SHARE = 0.5
HANDOFF_PERIOD = 1.0
MAX_HANDOFF_PERIOD = 16.0
_TIMED_ONE_IN = 16
#: Looks without an inline request before the standby goes to sleep (1 s).
_LOOKS_BEFORE_SLEEP = 100
#: The standby's longest sleep: how late a signal handler may run.
_LONGEST_SLEEP = 1.0


class RunnableClock:
    """Seconds the calling thread has been runnable: on a CPU, or in the run
    queue waiting for one.  The rest of the wall clock it waited for
    something (I/O, a lock, a sleep).  Its CPU time alone would count the run
    queue as waiting: a worker sharing the CPUs with others (two workers,
    nginx and wrk on two cores: two thirds of the loop thread's wall clock)
    would look like an app that waits, and send its requests to the pool.

    The thread's CPU clock plus, on Linux, its run-queue delay: the second
    field of /proc/thread-self/schedstat (ns, complete whenever the thread
    runs; the first field, its CPU time, lags by up to a scheduler tick).
    Made and read by one thread (the file is the opening thread's)."""

    def __init__(self) -> None:
        try:
            self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = -1

    def __call__(self) -> float:
        if self._fd < 0:
            return time.thread_time()
        in_run_queue = int(os.pread(self._fd, 64, 0).split()[1])
        return time.thread_time() + in_run_queue * 1e-9

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class PoolThread(threading.Thread):
    """A request thread; `request` is what it runs now (for status and slow logs)."""

    def __init__(self, server: Server, index: int) -> None:
        super().__init__(name="wsgi-fcgi-%d" % index, daemon=True)
        self.server = server
        self.request: Request | None = None
        self.slow_logged = False

    def run(self) -> None:
        get = self.server.pool.queue.get
        while True:
            try:
                request = get()
                if request is None:
                    return
                self.run_request(request)
            except RequestTimeout:  # an interrupt aimed at a request that just ended
                log.debug("%s: a stray request timeout between requests", self.name)
            except Exception:
                log.exception("%s: internal error between requests", self.name)

    def run_request(self, request: Request) -> None:
        self.request = request
        self.slow_logged = False
        try:
            self.server.handle_request(request)
        finally:
            self.request = None


class LoopThread(PoolThread):
    """Runs the selector loop, and the requests whose input is complete itself."""

    def __init__(self, server: Server) -> None:
        super().__init__(server, 0)
        self.name = "wsgi-fcgi-loop"

    def run(self) -> None:
        pool = self.server.pool
        pool.runnable_time = clock = RunnableClock()
        try:
            self._run_loop(pool)
        finally:
            clock.close()

    def _run_loop(self, pool: WorkerPool) -> None:
        while True:
            try:
                if self.server.loop.run(inline=True) or not pool.wait_for_loop():
                    return
            except RequestTimeout:  # an interrupt aimed at a request that just ended
                log.debug("%s: a stray request timeout in the loop", self.name)
            except Exception:  # the loop goes on: every connection's own errors are handled inside
                log.exception("%s: internal error in the I/O loop", self.name)


class WorkerPool:
    """The threads, the queue they take requests from, and the selector hand-off."""

    def __init__(self, server: Server, threads: int, inline: bool) -> None:
        self.server = server
        self.threads = threads
        self.inline = inline
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.members: list[PoolThread] = []
        self.loop_thread: LoopThread | None = None
        self._owner_lock = threading.Lock()
        self._owner: threading.Thread | None = None  # the thread running the selector
        self._inline_since = 0.0  # when the loop thread started its inline request, 0 if none
        self._handoff_until = 0.0  # inline runs paused until then: the app waits, see the module doc
        self._handoff_period = HANDOFF_PERIOD  # the next pause, if the next window finds it waiting too
        self._window_wall = 0.0  # inline requests' wall-clock and runnable time in this window
        self._window_runnable = 0.0
        self.runnable_time = time.thread_time  # the loop thread's RunnableClock once it runs
        self._untimed = 0  # rounds of inline requests to run before timing one again
        self._untimed_after_each = 0
        self._loop_wanted = False  # the loop thread is free again and wants the selector back
        self._loop_returned = threading.Event()
        self.loop_done = threading.Event()
        self._standby_asleep = False
        self._standby_wake = threading.Event()

    def __iter__(self):
        """The threads that run requests (the loop thread among them)."""
        return iter(self.members)

    def start(self) -> None:
        # `threads` pool threads, whether or not the loop thread runs requests
        # too: when the app waits, every request goes to the pool (see the
        # module doc), and threads - 1 of them would overlap one wait fewer.
        # So the loop thread's own request is one more than `threads` when
        # it runs while the pool threads are all busy (rare: inline requests
        # are the short ones, of an app found computing).
        for index in range(1, self.threads + 1):
            thread = PoolThread(self.server, index)
            thread.start()
            self.members.append(thread)

    def run(self) -> None:
        """In serve_forever's thread: the loop thread plus this standby, or the loop here."""
        if self.inline:
            self.loop_thread = LoopThread(self.server)
            self.members.insert(0, self.loop_thread)
            self._owner = self.loop_thread
            self.loop_thread.start()
            self._stand_by()
        else:
            self._owner = threading.current_thread()
            self.server.loop.run(inline=False)

    def stop(self, timeout: float = 1.0) -> None:
        self.loop_finished()
        for _ in self.members:
            self.queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self.members:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def loop_finished(self) -> None:
        """The loop ended (the server stops): the standby returns too."""
        self.loop_done.set()
        self._standby_wake.set()

    # -- dispatching (the thread running the selector) ----------------------------------

    def dispatch(self, ready, inline: bool) -> bool:
        """Queue the requests started this round, or run them here when the
        loop thread may.  False: the standby took the selector meanwhile."""
        if not inline or time.monotonic() < self._handoff_until:
            self._hand_all(ready)
            return True
        try:
            return self._run_each_inline(ready)
        finally:
            for callback in self.server.on_inline_round_end:
                callback()

    def _hand_all(self, ready) -> None:
        put = self.queue.put
        while ready:
            put(ready.popleft())

    def _run_each_inline(self, ready) -> bool:
        while ready:
            request = ready.popleft()
            if request.ended or request.streaming:
                self.queue.put(request)
                continue
            still_owner, app_waits = self._run_one_inline(request)
            if not still_owner or app_waits:  # the standby owns the selector, or the app waits
                self._hand_all(ready)
                if not still_owner:
                    return False
        return True

    def _run_one_inline(self, request: Request) -> tuple[bool, bool]:
        """(whether the loop thread still owns the selector, whether this
        request's timing found the app waiting)."""
        timed = not self._untimed
        if timed:
            runnable_started = self.runnable_time()
        else:
            self._untimed -= 1
        self._inline_since = started = time.monotonic()
        if self._standby_asleep:
            self._standby_asleep = False
            self._standby_wake.set()
        # Nobody polls while the loop thread runs a request: its chunks are not
        # written behind (Channel._write_chunk_locked) but sent at once.
        request.behind_credit = 0
        self.loop_thread.run_request(request)  # type: ignore[union-attr]
        with self._owner_lock:
            self._inline_since = 0.0
            still_owner = self._owner is self.loop_thread
        return still_owner, timed and self._time_inline(started, runnable_started)

    def _time_inline(self, started: float, runnable_started: float) -> bool:
        """Judge the app by its inline requests (see the module's doc); True
        when this one filled a window that found it waiting.  Once a window
        found it computing, only one request in _TIMED_ONE_IN is timed
        (reading the runnable clock takes two system calls, 3-7 us on a
        loaded machine); after a hand-off period every request is, until a
        window is full."""
        ended = time.monotonic()
        self._window_wall += ended - started
        self._window_runnable += self.runnable_time() - runnable_started
        if self._window_wall < _WINDOW:
            self._untimed = self._untimed_after_each
            return False
        waiting = 1.0 - self._window_runnable / self._window_wall
        self._window_wall = self._window_runnable = 0.0
        if waiting <= _WAITING_SHARE:
            self._handoff_period = HANDOFF_PERIOD
            self._untimed = self._untimed_after_each = _TIMED_ONE_IN - 1
            return False
        self._handoff_until = ended + self._handoff_period
        log.debug("requests waited %.0f%% of their time: to the pool threads for %.0f s",
                  100 * waiting, self._handoff_period)
        self._handoff_period = min(2 * self._handoff_period, MAX_HANDOFF_PERIOD)
        self._untimed = self._untimed_after_each = 0
        return True

    @property
    def loop_wanted(self) -> bool:
        return self._loop_wanted

    # -- the selector hand-off ------------------------------------------------------------

    def _stand_by(self) -> None:
        """Take the selector over while the loop thread is stuck in a long
        request, until the server stops."""
        me = threading.current_thread()
        idle_looks = 0
        pause = INLINE_TAKEOVER
        while not self.loop_done.is_set():
            if self._standby_asleep:
                # a bounded sleep: signal handlers run here (see the module doc)
                if self._standby_wake.wait(_LONGEST_SLEEP):
                    self._standby_wake.clear()
                continue
            if self.loop_done.wait(pause):
                return
            started = self._inline_since
            pause = self.until_takeover(started, time.monotonic())
            if not started:
                idle_looks += 1
                if idle_looks >= _LOOKS_BEFORE_SLEEP:
                    idle_looks = 0
                    self._standby_asleep = True
                    if self._inline_since:  # the loop thread started one meanwhile
                        self._standby_asleep = False
                continue
            idle_looks = 0
            if pause > 0:
                continue
            pause = INLINE_TAKEOVER
            with self._owner_lock:
                if self._inline_since != started:
                    continue  # that request just ended
                self._owner = me
            ready = self.server.loop.ready
            while ready:  # started before the loop thread got stuck: to the pool
                self.queue.put(ready.popleft())
            if self.server.loop.run(inline=False):
                return

    @staticmethod
    def until_takeover(started: float, now: float) -> float:
        """Seconds until the standby looks again: the deadline of the inline
        request that started at `started` (0 if none), else INLINE_TAKEOVER."""
        if not started:
            return INLINE_TAKEOVER
        return started + INLINE_TAKEOVER - now

    def wait_for_loop(self) -> bool:
        """The loop thread is free again: get the selector back from the
        standby.  False if the server stopped meanwhile."""
        self._loop_returned.clear()
        self._loop_wanted = True
        self.server.loop.wake()
        while not self.loop_done.is_set():
            if self._loop_returned.wait(0.1):
                return True
        return False

    def give_loop_back(self) -> None:
        with self._owner_lock:
            self._owner = self.loop_thread
            self._loop_wanted = False
        self._loop_returned.set()
