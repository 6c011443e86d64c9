"""WorkerPool's judgement of the app from its inline requests (pool.py):
wall clock against the loop thread's runnable time, on a fake clock; and
the real runnable clock on a shared CPU."""

import os
import subprocess
import sys
import threading
import time

import pytest

from wsgi_fcgi import pool as pool_module
from wsgi_fcgi.pool import HANDOFF_PERIOD, MAX_HANDOFF_PERIOD, RunnableClock, WorkerPool


class FakeClock:
    def __init__(self):
        self.wall = 1000.0
        self.runnable = 5.0

    def monotonic(self):
        return self.wall

    def thread_time(self):
        raise AssertionError("the pool times requests with its runnable clock")


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(pool_module, "time", fake)
    return fake


def new_pool(clock):
    pool = WorkerPool(None, threads=8, inline=True)
    pool.runnable_time = lambda: clock.runnable
    return pool


def run_inline(pool, clock, wall_ms, runnable_ms):
    """One inline request as dispatch() times it: `wall_ms` long, `runnable_ms` of it runnable."""
    started, runnable_started = clock.wall, clock.runnable
    clock.wall += wall_ms / 1000
    clock.runnable += runnable_ms / 1000
    pool._time_inline(started, runnable_started)


def test_an_app_that_computes_stays_inline_and_is_then_sampled(clock):
    pool = new_pool(clock)
    for _ in range(30):
        run_inline(pool, clock, 1.0, 1.0)
    assert pool._handoff_until == 0.0
    assert pool._untimed == 15  # one request in 16 is timed from now on


def test_an_app_that_waits_goes_to_the_pool_threads_for_a_while(clock):
    pool = new_pool(clock)
    for _ in range(5):  # 5 ms waits, 0.2 ms of CPU: the 20 ms window is full after the 5th
        run_inline(pool, clock, 5.0, 0.2)
    assert pool._handoff_until == pytest.approx(clock.wall + HANDOFF_PERIOD)
    assert pool._untimed == 0  # after the period every request is timed again


def test_the_pause_doubles_while_the_app_keeps_waiting_and_resets_once_it_computes(clock):
    """Each try serialises a window of waiting requests: tried less often
    the longer the app keeps waiting."""
    pool = new_pool(clock)
    pauses = []
    for _ in range(7):
        clock.wall = max(clock.wall, pool._handoff_until)  # the pause is over: inline runs again
        while pool._handoff_until <= clock.wall:
            run_inline(pool, clock, 6.0, 0.2)
        pauses.append(round(pool._handoff_until - clock.wall, 3))
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
    assert MAX_HANDOFF_PERIOD == 16.0
    clock.wall = pool._handoff_until
    for _ in range(30):
        run_inline(pool, clock, 1.0, 1.0)
    while pool._handoff_until <= clock.wall:
        run_inline(pool, clock, 6.0, 0.2)
    assert pool._handoff_until - clock.wall == pytest.approx(HANDOFF_PERIOD)


class FakeRequest:
    ended = streaming = False


class FakeLoopThread:
    """Runs each request for 6 ms of wall clock, 0.2 ms of it runnable."""

    def __init__(self, clock):
        self.clock = clock
        self.ran = []

    def run_request(self, request):
        self.clock.wall += 0.006
        self.clock.runnable += 0.0002
        self.ran.append(request)


def test_the_request_that_finds_the_app_waiting_sends_the_rest_of_its_round_to_the_pool(clock):
    """Else a round of 30 requests that wait 6 ms would hold the loop
    thread 180 ms (the standby takes over only from one request that runs
    longer than INLINE_TAKEOVER)."""
    from collections import deque

    pool = new_pool(clock)
    pool.loop_thread = pool._owner = FakeLoopThread(clock)
    ready = deque(FakeRequest() for _ in range(30))
    assert pool._run_each_inline(ready) is True
    assert len(pool.loop_thread.ran) == 4  # 24 ms: the window is full
    assert pool.queue.qsize() == 26 and not ready


def test_one_slow_database_call_among_fast_pages_is_enough(clock):
    pool = new_pool(clock)
    for _ in range(9):
        run_inline(pool, clock, 0.5, 0.5)
    run_inline(pool, clock, 50.0, 0.3)
    assert pool._handoff_until > clock.wall


def test_a_computing_request_preempted_once_is_no_reason_to_hand_off(clock):
    """On a busy machine the loop thread loses the CPU now and then: a
    window stays under half off the CPU."""
    pool = new_pool(clock)
    for index in range(200):
        run_inline(pool, clock, 3.0 if index == 50 else 0.1, 0.1)
    assert pool._handoff_until == 0.0


def _spin(seconds):
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="Linux schedstat")
def test_requests_preempted_by_other_processes_stay_inline():
    """The loop thread sharing its CPU with two busy processes is on it a
    third of the time: its CPU clock says its requests waited two thirds of
    their time, the runnable clock that they never waited."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    hogs = [subprocess.Popen([sys.executable, "-c", "import os\nos.sched_setaffinity(0, {%d})\nwhile 1: pass" % cpu])
            for _ in range(2)]
    pool = WorkerPool(None, threads=8, inline=True)
    measured = {}

    def loop_thread():
        os.sched_setaffinity(0, {cpu})  # this thread only
        pool.runnable_time = clock = RunnableClock()
        try:
            time.sleep(0.5)  # the hogs are spinning on that CPU
            wall, cpu_time, runnable = time.monotonic(), time.thread_time(), clock()
            for _ in range(100):  # 1 ms requests, timed as dispatch() times them
                started, runnable_started = time.monotonic(), clock()
                _spin(0.001)
                pool._time_inline(started, runnable_started)
            measured.update(wall=time.monotonic() - wall, cpu=time.thread_time() - cpu_time,
                            runnable=clock() - runnable)
        finally:
            clock.close()

    try:
        thread = threading.Thread(target=loop_thread)
        thread.start()
        thread.join(20)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert measured["cpu"] < 0.6 * measured["wall"], measured  # it did share the CPU
    assert measured["runnable"] > 0.9 * measured["wall"], measured
    assert pool._handoff_until == 0.0


def test_the_standby_looks_again_at_the_running_requests_deadline():
    """A request that runs past INLINE_TAKEOVER is running at one of the
    standby's looks (they are at most INLINE_TAKEOVER apart), which then
    sleeps to its deadline: taken over INLINE_TAKEOVER after it started,
    with at most one look per INLINE_TAKEOVER while short requests run."""
    from wsgi_fcgi.pool import INLINE_TAKEOVER

    until = WorkerPool.until_takeover
    assert until(0.0, 50.0) == INLINE_TAKEOVER  # nothing runs inline: look again in a while
    assert until(50.0 - 0.003, 50.0) == pytest.approx(INLINE_TAKEOVER - 0.003)
    assert until(50.0 - INLINE_TAKEOVER, 50.0) == pytest.approx(0.0)
    assert until(50.0 - 0.5, 50.0) < 0  # overdue: take it over now


def test_a_request_the_loop_thread_runs_itself_writes_no_chunk_behind(clock):
    """Nobody polls while the loop thread runs a request: a chunk written
    behind would wait for the standby's takeover (INLINE_TAKEOVER), so the
    request's chunks go out at once (Channel._write_chunk_locked)."""
    from types import SimpleNamespace

    pool = new_pool(clock)
    credit_while_running = []

    class LoopThread:
        def run_request(self, request):
            credit_while_running.append(request.behind_credit)

    pool.loop_thread = pool._owner = LoopThread()
    pool._run_one_inline(SimpleNamespace(behind_credit=1))
    assert credit_while_running == [0]
