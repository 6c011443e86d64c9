"""WorkerPool's judgement of the app from its inline requests (pool.py):
wall clock against the loop thread's CPU clock, on a fake clock."""

import pytest

from wsgi_fcgi import pool as pool_module
from wsgi_fcgi.pool import HANDOFF_PERIOD, WorkerPool


class FakeClock:
    def __init__(self):
        self.wall = 1000.0
        self.cpu = 5.0

    def monotonic(self):
        return self.wall

    def thread_time(self):
        return self.cpu


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(pool_module, "time", fake)
    return fake


def run_inline(pool, clock, wall_ms, cpu_ms):
    """One inline request as dispatch() times it: `wall_ms` long, `cpu_ms` of it on the CPU."""
    started, cpu_started = clock.wall, clock.cpu
    clock.wall += wall_ms / 1000
    clock.cpu += cpu_ms / 1000
    pool._time_inline(started, cpu_started)


def test_an_app_that_computes_stays_inline_and_is_then_sampled(clock):
    pool = WorkerPool(None, threads=8, inline=True)
    for _ in range(30):
        run_inline(pool, clock, 1.0, 1.0)
    assert pool._handoff_until == 0.0
    assert pool._untimed == 15  # one request in 16 is timed from now on


def test_an_app_that_waits_goes_to_the_pool_threads_for_a_while(clock):
    pool = WorkerPool(None, threads=8, inline=True)
    for _ in range(5):  # 5 ms waits, 0.2 ms of CPU: the 20 ms window is full after the 5th
        run_inline(pool, clock, 5.0, 0.2)
    assert pool._handoff_until == pytest.approx(clock.wall + HANDOFF_PERIOD)
    assert pool._untimed == 0  # after the period every request is timed again


def test_one_slow_database_call_among_fast_pages_is_enough(clock):
    pool = WorkerPool(None, threads=8, inline=True)
    for _ in range(9):
        run_inline(pool, clock, 0.5, 0.5)
    run_inline(pool, clock, 50.0, 0.3)
    assert pool._handoff_until > clock.wall


def test_a_computing_request_preempted_once_is_no_reason_to_hand_off(clock):
    """On a busy machine the loop thread loses the CPU now and then: a
    window stays under half off the CPU."""
    pool = WorkerPool(None, threads=8, inline=True)
    for index in range(200):
        run_inline(pool, clock, 3.0 if index == 50 else 0.1, 0.1)
    assert pool._handoff_until == 0.0
