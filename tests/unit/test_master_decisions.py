"""The master's decisions (boot, restart, recycle, reload, crash-loop guard,
heartbeats, dynamic pool) without forking: `spawn` and `_kill` record what
the master would do, and the test writes the workers' scoreboard slots."""

import signal
import time

import pytest

from wsgi_fcgi.master import Master
from wsgi_fcgi.scoreboard import READY, RETIRING, STARTING, Slot
from wsgi_fcgi.settings import Settings
from wsgi_fcgi.worker import BOOT_FAILED


class DryMaster(Master):
    def __init__(self, **values):
        super().__init__(Settings(values, app="app:app"), sockets=[])
        self.signals_sent = []  # (pid, signal)
        self._next_pid = 1000

    def spawn(self):
        from wsgi_fcgi.master import WorkerProcess
        used = {w.index for w in self.workers.values()}
        index = next(i for i in range(self.scoreboard.slots) if i not in used)
        self._next_pid += 1
        worker = WorkerProcess(self._next_pid, index, self.generation, time.monotonic())
        self.workers[worker.pid] = worker
        self.set_state(worker, STARTING)
        return worker

    def _kill(self, worker, sig):
        self.signals_sent.append((worker.pid, sig))

    # -- what the workers would publish ----------------------------------------------

    def set_state(self, worker, state, **fields):
        fields.setdefault("heartbeat", time.monotonic())
        slot = Slot(pid=worker.pid, generation=worker.generation, state=state, threads=self.settings.threads,
                    idle_since=time.monotonic(), **fields)
        self.scoreboard.write(worker.index, slot)

    def all_ready(self):
        for worker in self.workers.values():
            if not worker.stop_sent:
                self.set_state(worker, READY)

    def exited(self, worker, status):
        """As _reap does, with a wait status."""
        del self.workers[worker.pid]
        slot = self.scoreboard.fold(worker.index)
        self._worker_exited(worker, slot.state, status)

    def tick(self):
        now = time.monotonic()
        self._check_heartbeats(now)
        self._finish_reload()
        self._maintain(now)

    def live_pids(self):
        return sorted(w.pid for w in self._live())


def booted(**values) -> DryMaster:
    """A master whose first workers started and said READY."""
    master = DryMaster(**values)
    master.tick()  # one first
    master.all_ready()
    master.tick()  # then the rest
    master.all_ready()
    return master

def exit_status(code):
    return code << 8


def killed_by(sig):
    return int(sig)


def test_boots_one_worker_first_then_the_rest_once_it_is_ready():
    master = DryMaster(workers=3)
    master.tick()
    assert len(master.workers) == 1  # a broken app fails once, not three times
    master.all_ready()
    master.tick()
    assert len(master.workers) == 3 and master.ever_ready


def test_an_app_that_cannot_load_at_boot_stops_the_master_with_1():
    master = DryMaster(workers=2)
    master.tick()
    (worker,) = master.workers.values()
    master.exited(worker, exit_status(BOOT_FAILED))
    assert master.stopping and master.exit_code == 1


def test_a_worker_that_dies_is_replaced():
    master = booted(workers=2)
    victim = next(iter(master.workers.values()))
    master.exited(victim, killed_by(signal.SIGKILL))
    master.tick()
    assert len(master.workers) == 2 and victim.pid not in master.workers


def test_a_retiring_worker_is_replaced_before_it_exits():
    # --max-requests: the worker says RETIRING, finishes its requests; its
    # replacement starts at once, so the pool never runs short.
    master = booted(workers=2)
    retiring = next(iter(master.workers.values()))
    master.set_state(retiring, RETIRING)
    master.tick()
    assert len(master.workers) == 3 and retiring.pid not in master.live_pids()
    master.exited(retiring, exit_status(0))
    assert not master.deaths  # a planned exit is no crash


def test_the_crash_loop_guard_backs_off():
    master = booted(workers=2, restart_threshold=3, restart_window=60)
    for _ in range(3):
        worker = next(iter(master.workers.values()))
        master.exited(worker, killed_by(signal.SIGSEGV))
        master.tick()
    assert master.backoff >= 1.0 and master.spawn_after > time.monotonic()
    count = len(master.workers)
    master.tick()
    assert len(master.workers) == count  # nothing started while backing off


def test_a_silent_worker_is_killed_after_timeout():
    master = DryMaster(workers=1, timeout=5)
    master.tick()
    master.all_ready()
    (worker,) = master.workers.values()
    slot = master.scoreboard.read(worker.index)
    slot.heartbeat = time.monotonic() - 6
    master.scoreboard.write(worker.index, slot)
    worker.spawned -= 10
    master.tick()
    assert (worker.pid, signal.SIGKILL) in master.signals_sent


def test_a_worker_loading_its_app_past_timeout_is_killed_and_said_so(caplog):
    master = DryMaster(workers=1, timeout=5)
    master.tick()
    (worker,) = master.workers.values()
    worker.spawned -= 6
    master.set_state(worker, STARTING, heartbeat=worker.spawned)
    master.tick()
    assert (worker.pid, signal.SIGKILL) in master.signals_sent
    assert "worker %d still loading the app for 6 s (--timeout 5)" % worker.pid in caplog.text


def test_a_master_that_did_not_run_counts_the_silence_anew():
    master = DryMaster(workers=1, timeout=5)
    master.tick()
    master.all_ready()
    (worker,) = master.workers.values()
    worker.spawned -= 10
    slot = master.scoreboard.read(worker.index)
    slot.heartbeat = time.monotonic() - 6  # silent while the host was stalled ...
    master.scoreboard.write(worker.index, slot)
    master.heartbeats_checked -= 6  # ... the master too
    master.tick()
    assert not master.signals_sent
    master.watching_since -= 6  # a whole --timeout later, still silent
    master.tick()
    assert (worker.pid, signal.SIGKILL) in master.signals_sent


def test_reload_starts_new_workers_and_stops_the_old_once_they_are_ready():
    master = booted(workers=2)
    old = set(master.workers)
    master.reload()
    master.tick()
    new = set(master.workers) - old
    assert len(new) == 2 and not any(sig for pid, sig in master.signals_sent if pid in old)
    for pid in new:
        master.set_state(master.workers[pid], READY)
    master.tick()
    assert sorted(pid for pid, sig in master.signals_sent if sig == signal.SIGTERM) == sorted(old)


def test_a_reload_stops_the_workers_still_starting_and_a_failed_one_falls_back_to_those_serving():
    master = booted(workers=2)
    serving = set(master.workers)
    master.reload()
    master.tick()
    first = set(master.workers) - serving  # generation 2, still loading the app
    master.reload()
    master.tick()
    assert sorted(pid for pid, sig in master.signals_sent if sig == signal.SIGTERM) == sorted(first)
    second = set(master.workers) - serving - first
    assert len(second) == 2 and master.generation == 3
    master.exited(master.workers[min(second)], exit_status(BOOT_FAILED))  # before generation 2 is reaped
    master.tick()
    assert master.generation == 1 and sorted(master.live_pids()) == sorted(serving)
    assert not any(pid in serving for pid, sig in master.signals_sent)


def test_ttin_stops_where_the_scoreboard_could_not_hold_a_reload(caplog):
    master = booted(workers=1)
    most = master.scoreboard.slots // 2
    master.signals.extend([signal.SIGTTIN] * (most + 5))
    master._handle_signals()
    assert master.target == most
    assert "SIGTTIN: %d workers need a restart" % (most + 1) in caplog.text


def test_a_reload_whose_app_cannot_load_keeps_the_old_workers():
    master = booted(workers=1)
    (old,) = master.workers
    master.reload()
    master.tick()
    (new,) = set(master.workers) - {old}
    master.exited(master.workers[new], exit_status(BOOT_FAILED))
    master.tick()
    assert master.generation == 1 and not master.stopping
    assert old in master.workers and (old, signal.SIGTERM) not in master.signals_sent


@pytest.mark.parametrize("busy, expected", [(0, 2), (2, 3)])
def test_a_dynamic_pool_keeps_its_spare_workers(busy, expected):
    master = booted(workers=4, pm="dynamic", start_workers=2, min_spare_workers=1, max_spare_workers=2)
    assert len(master.workers) == 2
    for worker in list(master.workers.values())[:busy]:
        master.set_state(worker, READY, active=1)
    master.next_pool_tick = 0
    master.tick()
    assert len(master.live_pids()) == expected


def test_a_full_scoreboard_is_logged_once_not_at_every_round(caplog):
    master = DryMaster(workers=1)
    for _ in range(master.scoreboard.slots):
        master.spawn()  # the dry spawn: a slot each
    for worker in list(master.workers.values())[:3]:
        worker.stop_sent = True
    assert Master.spawn(master) is None and Master.spawn(master) is None
    assert caplog.text.count("no free scoreboard slot") == 1
    assert "(66 workers, 3 of them stopping)" in caplog.text
