"""The master (arbiter): binds the sockets, forks the workers, keeps them alive.

It never imports the app.  Workers accept on the inherited listening sockets
themselves, so the master costs nothing per request.  Signal handlers only
queue the signal; the set_wakeup_fd pipe wakes the loop, which does the work.

    TERM        graceful stop: workers drain up to --graceful-timeout, exit 0
    INT, QUIT   quick stop
    HUP         reload: new workers (which import the app afresh) first, then
                the old ones are stopped gracefully once the new ones are ready
    TTIN, TTOU  one worker more / less (with --pm dynamic/ondemand: the most)
    USR1        reopen the log files (master and workers)
    USR2        upgrade: exec a new master on the same listening sockets; once
                its workers are ready it sends this one TERM (see `upgrade`)

The pool (--pm, php-fpm's meaning): `static` keeps --workers; `dynamic` keeps
--min-spare-workers..--max-spare-workers idle workers (no request running),
at most --workers, checking once a second, forking 1, 2, 4... up to 32 at a
time while short of spares and stopping one idle worker per second above the
maximum; `ondemand` watches the listening sockets (poll, never accept) and
forks when a connection waits and no worker is idle, and stops a worker idle
for --worker-idle-timeout (the master decides and sends TERM: the policy and
its clock stay in one process, and the worker's graceful stop finishes what
it accepted); with no worker left, it holds the kept connections the last
one handed over and forks when a request arrives on one.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass

from . import accesslog, build_description, proctitle, systemd
from .errors import ConfigError, fail
from .handoff import Handoff
from .listeners import remove_unix_socket
from .scoreboard import LOADING, READY, RETIRING, STARTING, Scoreboard
from .settings import SettingError, reread
from .worker import BOOT_FAILED, Worker

log = logging.getLogger("wsgi_fcgi")

_LOOP_INTERVAL = 0.25
#: A master round this much later than its poll's timeout: the master was not
#: running (a stalled host, a throttled cgroup), and did not see its workers.
_STALLED = 1.0
#: slots beyond --workers, for reloads (old and new workers side by side) and TTIN
_SPARE_SLOTS = 64
_KILL_GRACE = 5.0
_MAX_BACKOFF = 60.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
            signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
#: how often dynamic and ondemand pools look at their spare and idle workers (php-fpm: 1 s)
_POOL_TICK = 1.0
#: php-fpm's FPM_MAX_SPAWN_RATE: the most workers a dynamic pool forks in one tick
_MAX_SPAWN_RATE = 32
#: after the listening sockets showed a waiting connection, look again this much later at the earliest
_WATCH_PAUSE = 0.05
#: USR2: the new master finds its listening sockets and the old master's pid in these
FDS_ENV = "WSGI_FCGI_FDS"
OLD_MASTER_ENV = "WSGI_FCGI_OLD_MASTER"
HANDOFF_ENV = "WSGI_FCGI_HANDOFF"


@dataclass
class WorkerProcess:
    pid: int
    index: int  # scoreboard slot
    generation: int
    spawned: float
    stop_sent: bool = False
    kill_at: float | None = None  # SIGKILL if still alive then


class Master:
    def __init__(self, settings, sockets: list, start_dir: str | None = None) -> None:
        self.settings = settings
        self.sockets = sockets
        # idle kept connections of stopping workers go to live ones (handoff.py)
        self.handoff = inherited_handoff() or Handoff()
        self.start_dir = start_dir or os.getcwd()  # USR2 runs the command line again from there
        self.target = settings.workers
        self.scoreboard = Scoreboard(settings.workers * 2 + _SPARE_SLOTS)
        self.workers: dict[int, WorkerProcess] = {}
        self.generation = 1
        self.ever_ready = False
        self.stopping = False
        self.exit_code = 0
        self.signals: collections.deque = collections.deque()
        self.deaths: collections.deque = collections.deque()  # times of unexpected exits
        self.backoff = 0.0
        self.spawn_after = 0.0
        self.pid = os.getpid()
        self.app = None  # --preload: imported here, before forking
        self.pool_started = False  # the current generation got its --start-workers
        self.next_pool_tick = 0.0
        self.spawn_rate = 1
        self.at_max = False  # wanting more workers than --workers now
        self.max_reached = 0  # how often that began
        self.connection_waiting = False
        self.watch_after = 0.0
        self.slots_full = False  # a worker wanted and no scoreboard slot left for it (logged)
        self.heartbeats_checked: float | None = None
        self.watching_since = 0.0  # workers' silence counts from here at the earliest
        self.parked: list[socket.socket] = []  # kept connections held while no worker can adopt them
        self.new_master: int | None = None  # USR2: the new master, our child, while it starts
        self.handed_over = False  # a new master serves our sockets: leave them and the pid file
        self.old_master = _pop_int(os.environ, OLD_MASTER_ENV)  # we are the new master of a USR2
        self.old_master_told = False

    # -- main loop -------------------------------------------------------------

    def run(self) -> int:
        proctitle.master_title(self.settings.pool_name or self.settings.app)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in _HANDLED:
            signal.signal(sig, self._queue_signal)
        try:
            self._write_pid()
        except OSError as exc:
            self._cleanup()
            fail("cannot write --pid %s: %s" % (self.settings.pid, exc.strerror or exc))
        if self.settings.preload:
            self._preload()
        log.info("master %d: wsgi-fcgi %s, %s%d worker(s) x %d threads on %s", self.pid, build_description(),
                 "" if self.settings.pm == "static" else "--pm %s, at most " % self.settings.pm, self.target,
                 self.settings.threads, ", ".join(_addresses(self.sockets)))
        try:
            while True:
                self._handle_signals()
                self._reap()
                now = time.monotonic()
                self._kill_overdue(now)
                if self.stopping:
                    if not self.workers:
                        break
                else:
                    self._check_heartbeats(now)
                    self._finish_reload()
                    self._maintain(now)
                    self._unpark()
                    self._finish_upgrade()
                self.scoreboard.set_pool(self.settings.pm, self.target, self.max_reached)
                self._sleep()
        finally:
            self._cleanup()
        log.info("master %d: stopped", self.pid)
        return self.exit_code

    def _queue_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _sleep(self) -> None:
        listeners = self._listeners_to_watch()
        kept = self._kept_to_watch()
        poller = select.poll()  # not select(): parked connections may be many, their fds above 1024
        for fd in [self._wake_r] + listeners + kept:
            poller.register(fd, select.POLLIN)
        try:
            readable = {fd for fd, _ in poller.poll(_LOOP_INTERVAL * 1000)}
        except InterruptedError:
            readable = set()
        if any(sock.fileno() in readable for sock in listeners):
            self._note_waiting()
        if kept:
            self._tend_parked(readable)
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _note_waiting(self) -> None:
        """A connection or a request waits for a worker (--pm ondemand)."""
        self.connection_waiting = True
        self.watch_after = time.monotonic() + _WATCH_PAUSE  # no busy loop while it waits

    # -- kept connections while no worker lives (--pm ondemand) ------------------

    def _kept_to_watch(self) -> list:
        """--pm ondemand, no worker left: the hand-off queue and the kept
        connections taken off it.  The last worker to stop hands its kept
        connections over as every stopping worker does (handoff.py); nobody
        would adopt them, and a request the web server sends on one would
        wait in the kernel until its timeout (nginx: 504 after 60 s).  So the
        master takes them, and a request arriving on one starts a worker,
        which adopts them all."""
        if self.settings.pm != "ondemand" or self.stopping or any(True for _ in self._live()):
            return []
        if time.monotonic() < max(self.watch_after, self.spawn_after):
            return [self.handoff.receiver]  # a request waits, no worker yet: no busy loop on it
        return [self.handoff.receiver] + self.parked

    def _tend_parked(self, readable: set) -> None:
        if self.handoff.receiver.fileno() in readable:
            self.parked += self.handoff.receive()
        for sock in [sock for sock in self.parked if sock.fileno() in readable]:
            try:
                request_waiting = bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            except BlockingIOError:
                continue
            except OSError:
                request_waiting = False
            if request_waiting:
                self._note_waiting()
            else:  # the web server closed it
                self.parked.remove(sock)
                sock.close()

    def _unpark(self) -> None:
        """Parked connections back on the queue once a worker will adopt them."""
        if self.parked and not self._kept_to_watch():
            self._requeue_parked()

    def _requeue_parked(self) -> None:
        """As many as the queue holds (the rest at the next round)."""
        while self.parked and self.handoff.send(self.parked[0]):
            self.parked.pop(0).close()

    def _listeners_to_watch(self) -> list:
        """--pm ondemand: the listening sockets, when a waiting connection
        would start a worker (or count as "max workers reached"): none is
        idle or starting."""
        if self.settings.pm != "ondemand" or self.stopping or not self.ever_ready:
            return []
        if time.monotonic() < max(self.watch_after, self.spawn_after):
            return []
        live = list(self._live())
        for worker in live:
            slot = self.scoreboard.read(worker.index)
            if slot.state == STARTING or (slot.state == READY and not slot.active):
                return []
        return self.sockets

    def _handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.popleft()
            if sig == signal.SIGCHLD:
                continue  # reaped below
            if sig == signal.SIGTERM:
                if self.new_master is not None:
                    self.handed_over = True  # from the new master of a USR2, or the operator
                self.stop(graceful=True)
            elif sig in (signal.SIGINT, signal.SIGQUIT):
                self.stop(graceful=False)
            elif self.stopping:
                continue
            elif sig == signal.SIGHUP:
                self.reload()
            elif sig == signal.SIGTTIN:
                if self._room_for(self.target + 1, "SIGTTIN"):
                    self.target += 1
                    log.info("master: SIGTTIN, now %d worker(s)", self.target)
            elif sig == signal.SIGTTOU:
                if self.target > 1:
                    self.target -= 1
                log.info("master: SIGTTOU, now %d worker(s)", self.target)
            elif sig == signal.SIGUSR2:
                self.upgrade()
            elif sig == signal.SIGUSR1:
                log.info("master: SIGUSR1, reopening log files")
                accesslog.reopen_log_files()
                self._signal_all(signal.SIGUSR1)

    # -- workers ---------------------------------------------------------------

    def spawn(self) -> WorkerProcess | None:
        used = {w.index for w in self.workers.values()}
        index = next((i for i in range(self.scoreboard.slots) if i not in used), None)
        if index is None:
            if not self.slots_full:  # once, not at every round until a worker exits
                self.slots_full = True
                stopping = sum(1 for w in self.workers.values() if w.stop_sent)
                log.error("master: no free scoreboard slot (%d workers, %d of them stopping); "
                          "starting a worker once one exits", len(self.workers), stopping)
            return None
        self.slots_full = False
        self.scoreboard.claim(index)
        sys.stdout.flush()
        sys.stderr.flush()
        # A stop signal sent to the new worker before it has its own handlers
        # would run the master's (inherited: it only queues) and be lost: the
        # worker would boot and serve on while the master waits for it.
        # Blocked across fork, it reaches the child once that has SIG_DFL.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._run_worker(index, mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        worker = WorkerProcess(pid, index, self.generation, time.monotonic())
        self.workers[pid] = worker
        log.debug("master: started worker %d (generation %d)", pid, self.generation)
        return worker

    def _run_worker(self, index: int, mask) -> None:
        """In the child: never returns."""
        code = 1
        try:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self.signals.clear()
            code = Worker(self.settings, self.sockets, self.scoreboard, index, self.generation, self.pid,
                          app=self.app, handoff=self.handoff).run()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                if pid == self.new_master:
                    self._upgrade_failed(status)
                continue
            slot = self.scoreboard.fold(worker.index)  # its counters go to the pool's totals
            self._worker_exited(worker, slot.state, status)

    def _worker_exited(self, worker: WorkerProcess, state: int, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        how = "exit code %d" % code if code >= 0 else "signal %s" % signal.Signals(-code).name
        if worker.stop_sent or self.stopping or (code == 0 and state == RETIRING):
            log.info("master: worker %d stopped (%s)", worker.pid, how)
            return
        if state == STARTING and code == BOOT_FAILED:
            if not self.ever_ready:
                log.error("master: the app cannot be loaded; stopping")
                self.exit_code = 1
                self.stop(graceful=False)
                return
            if any(w.generation < self.generation for w in self.workers.values()):
                self._abort_reload()
                return
            log.error("master: worker %d could not load the app", worker.pid)
        else:
            log.error("master: worker %d died unexpectedly (%s)", worker.pid, how)
        self._count_death()

    def _count_death(self) -> None:
        """php-fpm's emergency_restart_threshold: too many deaths in a window -> back off."""
        now = time.monotonic()
        self.deaths.append(now)
        window = self.settings.restart_window
        while self.deaths and now - self.deaths[0] > window:
            self.deaths.popleft()
        if len(self.deaths) >= self.settings.restart_threshold:
            self.backoff = min(_MAX_BACKOFF, max(1.0, self.backoff * 2))
            self.spawn_after = now + self.backoff
            log.critical("master: %d workers died within %.0f s: waiting %.0f s before starting more "
                         "(crash loop guard; check the app and the error log)",
                         len(self.deaths), window, self.backoff)
        else:
            self.backoff = 0.0

    def _live(self):
        """Current-generation workers that are not on their way out."""
        for worker in self.workers.values():
            if worker.generation == self.generation and not worker.stop_sent:
                if self.scoreboard.read(worker.index).state != RETIRING:
                    yield worker

    def _maintain(self, now: float) -> None:
        live = sorted(self._live(), key=lambda w: w.spawned)
        wanted = self.target if self.ever_ready else 1  # boot one first: a broken app fails once
        if not self.ever_ready and any(self.scoreboard.read(w.index).state == READY for w in live):
            self.ever_ready = True
            wanted = self.target
            systemd.ready(self._status_line())
        if self.ever_ready:
            wanted = self._pool_size(live, now)
        if len(live) < wanted and now >= self.spawn_after:
            for _ in range(wanted - len(live)):
                if self.signals or self.spawn() is None:
                    break  # a TERM or INT in the middle of a big pool is answered first
        for worker in live[:max(0, len(live) - self.target)]:
            self._stop_worker(worker, signal.SIGTERM)

    # -- pool modes (--pm) ----------------------------------------------------------

    def _pool_size(self, live: list, now: float) -> int:
        """How many live workers the pool wants now."""
        pm = self.settings.pm
        if pm == "static":
            return self.target
        if not self.pool_started:
            self.pool_started = True
            return boot_workers(self.settings, self.target)
        if pm == "ondemand":
            return self._ondemand(live, now)
        return self._dynamic(live, now)

    def _idle(self, live: list) -> tuple:
        """([(idle worker, its slot)] longest idle first, number of workers starting)."""
        idle, starting = [], 0
        for worker in live:
            slot = self.scoreboard.read(worker.index)
            if slot.state == STARTING:
                starting += 1
            elif slot.state == READY and not slot.active:
                idle.append((worker, slot))
        idle.sort(key=lambda pair: pair[1].idle_since)
        return idle, starting

    def _dynamic(self, live: list, now: float) -> int:
        """php-fpm's pm = dynamic, once a second."""
        if now < self.next_pool_tick:
            return len(live)
        self.next_pool_tick = now + _POOL_TICK
        settings = self.settings
        idle, starting = self._idle(live)
        if len(idle) > settings.max_spare_workers:
            worker = idle[0][0]
            log.info("master: %d idle workers, more than --max-spare-workers %d: stopping worker %d",
                     len(idle), settings.max_spare_workers, worker.pid)
            self._stop_worker(worker, signal.SIGTERM)
            self.spawn_rate = 1
            return len(live) - 1
        spare = len(idle) + starting  # a worker starting is about to be idle
        if spare >= settings.min_spare_workers:
            self.spawn_rate = 1
            self.at_max = False
            return len(live)
        if len(live) >= self.target:
            self._reached_max()
            self.spawn_rate = 1
            return len(live)
        count = min(self.spawn_rate, settings.min_spare_workers - spare, self.target - len(live))
        if self.spawn_rate >= 8:
            log.warning("master: the pool seems busy (consider raising --start-workers or "
                        "--min/max-spare-workers): starting %d workers, %d idle, %d in all",
                        count, len(idle), len(live))
        self.spawn_rate = min(_MAX_SPAWN_RATE, self.spawn_rate * 2)
        self.at_max = False
        return len(live) + count

    def _ondemand(self, live: list, now: float) -> int:
        """php-fpm's pm = ondemand: a worker more when a connection waits (or
        every worker's threads are busy: a worker accepts while its threads
        are busy, so its queued requests show no waiting connection) and none
        is idle; one idle worker past --worker-idle-timeout stopped a second."""
        idle, starting = self._idle(live)
        waiting, self.connection_waiting = self.connection_waiting, False
        if idle:
            self.at_max = False
        elif not starting and (waiting or self._saturated(live)):
            if len(live) < self.target:
                self.at_max = False
                log.debug("master: a connection waits and no worker is idle: starting one")
                return len(live) + 1
            self._reached_max()
        if now >= self.next_pool_tick:
            self.next_pool_tick = now + _POOL_TICK
            if idle and now - idle[0][1].idle_since >= self.settings.worker_idle_timeout:
                worker = idle[0][0]
                log.info("master: worker %d idle for %.0f s (--worker-idle-timeout): stopping it",
                         worker.pid, now - idle[0][1].idle_since)
                self._stop_worker(worker, signal.SIGTERM)
                return len(live) - 1
        return len(live)

    def _saturated(self, live: list) -> bool:
        if not live:
            return False
        for worker in live:
            slot = self.scoreboard.read(worker.index)
            if slot.state != READY or slot.active < slot.threads:
                return False
        return True

    def _reached_max(self) -> None:
        """php-fpm's "max children reached": counted once each time the pool
        wants more workers than --workers allows."""
        if not self.at_max:
            self.at_max = True
            self.max_reached += 1
            log.warning("master: the pool reached --workers %d and wants more; consider raising it",
                        self.target)

    def _check_heartbeats(self, now: float) -> None:
        self._note_own_stall(now)
        for worker in list(self.workers.values()):
            if worker.kill_at is not None:
                continue
            slot = self.scoreboard.read(worker.index)
            silent = now - max(slot.heartbeat, worker.spawned, self.watching_since)
            if silent > self.settings.timeout:
                log.error("master: worker %d %s for %.0f s (--timeout %g): killing it", worker.pid,
                          "still loading the app" if slot.state in LOADING else "sent no heartbeat",
                          silent, self.settings.timeout)
                self._kill(worker, signal.SIGKILL)
                worker.kill_at = now

    def _note_own_stall(self, now: float) -> None:
        """When the master itself did not run for a while, the workers did
        not either (the whole host or cgroup stalled) or nobody watched:
        their silence is counted anew, rather than all killed at once as
        the master wakes, each a beat short of its next heartbeat."""
        last, self.heartbeats_checked = self.heartbeats_checked, now
        if last is not None and now - last > _LOOP_INTERVAL + _STALLED:
            log.warning("master: did not run for %.1f s (a stalled host?): the workers' heartbeats "
                        "are counted from now", now - last)
            self.watching_since = now

    def _kill_overdue(self, now: float) -> None:
        for worker in self.workers.values():
            if worker.kill_at is not None and now >= worker.kill_at:
                log.warning("master: worker %d did not stop in time: killing it", worker.pid)
                self._kill(worker, signal.SIGKILL)
                worker.kill_at = now + _KILL_GRACE

    def _stop_worker(self, worker: WorkerProcess, sig: int) -> None:
        worker.stop_sent = True
        grace = self.settings.graceful_timeout if sig == signal.SIGTERM else 0.0
        worker.kill_at = time.monotonic() + grace + _KILL_GRACE
        self._kill(worker, sig)

    @staticmethod
    def _kill(worker: WorkerProcess, sig: int) -> None:
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers.values():
            self._kill(worker, sig)

    # -- reload and stop ---------------------------------------------------------

    def reload(self) -> None:
        systemd.reloading("reloading")
        self._reread_settings()
        superseded = self._stop_starting_workers()
        self.generation += 1
        self.pool_started = False
        log.info("master: SIGHUP, starting %d new worker(s); the old ones stop once these are ready%s",
                 boot_workers(self.settings, self.target),
                 " (stopping the %d still loading the app: these replace them)" % superseded if superseded else "")
        if self.app is not None:
            log.info("master: --preload: the new workers run the app imported at start, no new code "
                     "(send USR2 to load new code)")

    def _stop_starting_workers(self) -> int:
        """Stop the workers still loading the app (an earlier reload's, a
        replacement's): they have served nothing, and the new reload's
        workers replace them.  Left to start, HUPs coming faster than the app
        loads started a generation each, none ready before the next, until
        the scoreboard was full.  The workers serving go on until the new
        ones are ready, as at any reload."""
        starting = [w for w in self.workers.values()
                    if not w.stop_sent and self.scoreboard.read(w.index).state in LOADING]
        for worker in starting:
            self._stop_worker(worker, signal.SIGTERM)
        return len(starting)

    def _finish_reload(self) -> None:
        old = [w for w in self.workers.values() if w.generation < self.generation and not w.stop_sent]
        if not old:
            return
        ready = sum(1 for w in self._live() if self.scoreboard.read(w.index).state == READY)
        if ready >= boot_workers(self.settings, self.target):
            for worker in old:
                self._stop_worker(worker, signal.SIGTERM)
            systemd.ready(self._status_line())

    def _abort_reload(self) -> None:
        older = [w for w in self.workers.values() if w.generation < self.generation]
        serving = [w for w in older if not w.stop_sent]  # not those a later HUP stopped as they started
        old_generation = max(w.generation for w in serving or older)
        log.error("master: reload failed, the new workers cannot load the app; keeping the old workers")
        systemd.ready("reload failed: the new workers cannot load the app; old workers serving")
        for worker in self.workers.values():
            if worker.generation > old_generation and not worker.stop_sent:
                self._stop_worker(worker, signal.SIGTERM)
        self.generation = old_generation

    def stop(self, graceful: bool) -> None:
        if self.stopping and graceful:
            return
        self.stopping = True
        log.info("master: %s stop", "graceful" if graceful else "quick")
        if not self.handed_over:  # after USR2 the new master's workers adopt them, and the service goes on
            self.handoff.close_pool()  # kept connections are closed now: no worker will adopt them
            systemd.stopping("%s stop" % ("graceful" if graceful else "quick"))
        for worker in self.workers.values():
            self._stop_worker(worker, signal.SIGTERM if graceful else signal.SIGQUIT)

    def _reread_settings(self) -> None:
        """HUP re-reads --config (the command line and environment are those
        of the start); the new workers get the new settings."""
        if self.settings.argv is None:
            return
        try:
            settings, changes = reread(self.settings)
        except SettingError as exc:
            log.error("master: SIGHUP: %s; keeping the current settings", exc)
            return
        except SystemExit:  # argparse, on a command line that parsed at start: cannot happen
            return
        for change in changes:
            log.info("master: SIGHUP: %s", change)
        if settings.workers != self.settings.workers:
            if self._room_for(settings.workers, "SIGHUP"):
                self.target = settings.workers
            else:
                settings.workers = self.settings.workers
        self.settings = settings

    def _room_for(self, workers: int, why: str) -> bool:
        """Whether the scoreboard, sized at start, holds `workers` twice over
        (a reload's old and new workers side by side); logged when not."""
        if workers * 2 <= self.scoreboard.slots:
            return True
        log.error("master: %s: %d workers need a restart (scoreboard of %d slots); keeping %d",
                  why, workers, self.scoreboard.slots, self.target)
        return False

    def _status_line(self) -> str:
        return "%d worker(s) x %d threads, generation %d" % (self.target, self.settings.threads, self.generation)

    def _cleanup(self) -> None:
        for worker in self.workers.values():
            self._kill(worker, signal.SIGKILL)
        self._requeue_parked()  # after USR2, for the new master's workers
        for sock in self.parked:  # the pool stops: nobody will adopt them
            sock.close()
        for sock in self.sockets:
            if not self.handed_over:  # the socket file is the new master's now
                remove_unix_socket(sock)
            sock.close()
        if self.settings.pid:
            try:
                os.unlink(self.settings.pid + ".oldbin" if self.handed_over else self.settings.pid)
            except OSError:
                pass

    # -- --preload and USR2 ----------------------------------------------------------

    def _preload(self) -> None:
        from .apploader import AppImportError, load_app
        from .memory import freeze_loaded_objects
        try:
            self.app = load_app(self.settings.app)
        except AppImportError as exc:
            self._cleanup()
            fail(str(exc), self.settings.log_level == "debug")
        freeze_loaded_objects()
        log.info("master: --preload: imported %s; workers share it", self.settings.app)

    def upgrade(self) -> None:
        """USR2 (gunicorn's re-exec, nginx's binary upgrade, done to the end by
        itself): fork, and exec the same command line in the child with our
        listening sockets inherited (never bound again).  The pid file moves
        to PIDFILE.oldbin; the new master writes PIDFILE, starts its workers
        and, once they are ready, sends us TERM: we drain and exit.  If the
        new master dies before that, we take the pid file back and go on."""
        if self.new_master is not None:
            log.warning("master: SIGUSR2 ignored: the new master %d is still starting", self.new_master)
            return
        if self.old_master is not None and os.getppid() == self.old_master:
            log.warning("master: SIGUSR2 ignored: the old master %d has not stopped yet", self.old_master)
            return
        if self.settings.argv is None:
            log.error("master: SIGUSR2 ignored: not started from the command line, nothing to run again")
            return
        if self.settings.pid:
            try:
                os.replace(self.settings.pid, self.settings.pid + ".oldbin")
            except OSError as exc:
                log.error("master: SIGUSR2: cannot move --pid %s: %s", self.settings.pid, exc.strerror)
                return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._exec_new_master()
        self.new_master = pid
        log.info("master %d: SIGUSR2, started the new master %d; this one stops once it is ready", self.pid, pid)

    def _exec_new_master(self) -> None:
        """In the forked child: never returns."""
        try:
            signal.set_wakeup_fd(-1)
            fds = [sock.fileno() for sock in self.sockets]
            handoff = [self.handoff.sender.fileno(), self.handoff.receiver.fileno()]
            for fd in fds + handoff:
                os.set_inheritable(fd, True)
            environ = dict(os.environ)
            environ[FDS_ENV] = ",".join(map(str, fds))
            environ[HANDOFF_ENV] = "%d,%d" % tuple(handoff)  # our workers' idle connections go to the new ones
            environ[OLD_MASTER_ENV] = str(self.pid)
            os.chdir(self.start_dir)
            os.execve(sys.executable, [sys.executable, "-m", "wsgi_fcgi", *self.settings.argv], environ)
        except BaseException:
            log.exception("master: SIGUSR2: cannot start the new master")
        finally:
            os._exit(127)

    def _upgrade_failed(self, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        log.error("master: the new master %d exited (%s) before it was ready; this one goes on",
                  self.new_master, "exit code %d" % code if code >= 0 else signal.Signals(-code).name)
        self.new_master = None
        if self.settings.pid and not self.handed_over:
            try:
                os.replace(self.settings.pid + ".oldbin", self.settings.pid)
            except OSError:
                self._write_pid()

    def _finish_upgrade(self) -> None:
        """The new master of a USR2: once our workers are ready, TERM to the old one."""
        if self.old_master is None or self.old_master_told or not self.ever_ready:
            return
        ready = sum(1 for w in self._live() if self.scoreboard.read(w.index).state == READY)
        if ready < boot_workers(self.settings, self.target):
            return
        self.old_master_told = True
        if os.getppid() == self.old_master:  # still there (else it is gone, its pid maybe reused)
            log.info("master %d: ready; asking the old master %d to drain and stop", self.pid, self.old_master)
            os.kill(self.old_master, signal.SIGTERM)

    def _write_pid(self) -> None:
        if self.settings.pid:
            with open(self.settings.pid + ".tmp", "w") as f:
                f.write("%d\n" % self.pid)
            os.replace(self.settings.pid + ".tmp", self.settings.pid)


def boot_workers(settings, most: int) -> int:
    """Workers a pool starts with (at boot, after HUP, for USR2's new master)."""
    if settings.pm == "ondemand":
        return 1  # the app is loaded once at boot, so a broken one fails at once; it idles out
    if settings.pm == "dynamic":
        start = settings.start_workers
        if start is None:
            start = settings.min_spare_workers + (settings.max_spare_workers - settings.min_spare_workers) // 2
        return max(1, min(most, start))
    return most


def check_pool(settings) -> None:
    """The --pm settings together; ConfigError (one line) if they do not fit."""
    if settings.pm == "dynamic":
        low, high, most = settings.min_spare_workers, settings.max_spare_workers, settings.workers
        if not 1 <= low <= high <= most:
            raise ConfigError("--pm dynamic needs 1 <= --min-spare-workers (%d) <= --max-spare-workers (%d) "
                              "<= --workers (%d)" % (low, high, most))
        start = settings.start_workers
        if start is not None and not low <= start <= most:
            raise ConfigError("--pm dynamic needs --min-spare-workers (%d) <= --start-workers (%d) "
                              "<= --workers (%d)" % (low, start, most))
    if settings.pm == "ondemand" and settings.worker_idle_timeout <= 0:
        raise ConfigError("--pm ondemand needs --worker-idle-timeout above 0")


def inherited_sockets() -> list | None:
    """The listening sockets a USR2 upgrade passed to this new master, or None."""
    fds = os.environ.pop(FDS_ENV, None)
    if fds is None:
        return None
    from .listeners import Address, create_listener
    try:
        return [create_listener(Address("fd", fd=int(fd))) for fd in fds.split(",")]
    except ValueError:
        raise ConfigError("%s=%r: not a list of file descriptors" % (FDS_ENV, fds)) from None


def inherited_handoff() -> Handoff | None:
    """USR2: the old master's Handoff pair, so that the idle kept connections
    of its stopping workers reach ours; None when not upgrading."""
    fds = os.environ.pop(HANDOFF_ENV, None)
    if fds is None:
        return None
    handoff = Handoff()
    handoff.close()  # its own pair: the old master's replaces it
    handoff.sender, handoff.receiver = (socket.socket(fileno=int(fd)) for fd in fds.split(","))
    handoff.sender.setblocking(False)
    handoff.receiver.setblocking(False)
    return handoff


def _pop_int(environ, name: str) -> int | None:
    try:
        return int(environ.pop(name))
    except (KeyError, ValueError):
        return None


def _addresses(sockets: list) -> list:
    from .listeners import listener_address
    return [listener_address(sock) for sock in sockets]
