"""The master (arbiter): binds the sockets, forks the workers, keeps them alive.

It never imports the app.  Workers accept on the inherited listening sockets
themselves, so the master costs nothing per request.  Signal handlers only
queue the signal; the set_wakeup_fd pipe wakes the loop, which does the work.

    TERM        graceful stop: workers drain up to --graceful-timeout, exit 0
    INT, QUIT   quick stop
    HUP         reload: new workers (which import the app afresh) first, then
                the old ones are stopped gracefully once the new ones are ready
    TTIN, TTOU  one worker more / less
    USR1        reopen the log files (master and workers)
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional

from . import accesslog, proctitle, systemd
from .errors import fail
from .listeners import remove_unix_socket
from .settings import SettingError, reread
from .scoreboard import READY, RETIRING, STARTING, Scoreboard
from .worker import BOOT_FAILED, Worker

log = logging.getLogger("wsgi_fcgi")

_LOOP_INTERVAL = 0.25
#: slots beyond --workers, for reloads (old and new workers side by side) and TTIN
_SPARE_SLOTS = 64
_KILL_GRACE = 5.0
_MAX_BACKOFF = 60.0
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
            signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD)


@dataclass
class WorkerProcess:
    pid: int
    index: int  # scoreboard slot
    generation: int
    spawned: float
    stop_sent: bool = False
    kill_at: Optional[float] = None  # SIGKILL if still alive then


class Master:
    def __init__(self, settings, sockets: list) -> None:
        self.settings = settings
        self.sockets = sockets
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
        log.info("master %d: %d worker(s) x %d threads on %s", self.pid, self.target, self.settings.threads,
                 ", ".join(_addresses(self.sockets)))
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
                self._sleep()
        finally:
            self._cleanup()
        log.info("master %d: stopped", self.pid)
        return self.exit_code

    def _queue_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _sleep(self) -> None:
        try:
            select.select([self._wake_r], [], [], _LOOP_INTERVAL)
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.popleft()
            if sig == signal.SIGCHLD:
                continue  # reaped below
            if sig == signal.SIGTERM:
                self.stop(graceful=True)
            elif sig in (signal.SIGINT, signal.SIGQUIT):
                self.stop(graceful=False)
            elif self.stopping:
                continue
            elif sig == signal.SIGHUP:
                self.reload()
            elif sig == signal.SIGTTIN:
                self.target += 1
                log.info("master: SIGTTIN, now %d worker(s)", self.target)
            elif sig == signal.SIGTTOU:
                if self.target > 1:
                    self.target -= 1
                log.info("master: SIGTTOU, now %d worker(s)", self.target)
            elif sig == signal.SIGUSR1:
                log.info("master: SIGUSR1, reopening log files")
                accesslog.reopen_log_files()
                self._signal_all(signal.SIGUSR1)

    # -- workers ---------------------------------------------------------------

    def spawn(self) -> Optional[WorkerProcess]:
        used = {w.index for w in self.workers.values()}
        index = next((i for i in range(self.scoreboard.slots) if i not in used), None)
        if index is None:
            log.error("master: no free scoreboard slot; not starting a worker")
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._run_worker(index)
        worker = WorkerProcess(pid, index, self.generation, time.monotonic())
        self.workers[pid] = worker
        log.debug("master: started worker %d (generation %d)", pid, self.generation)
        return worker

    def _run_worker(self, index: int) -> None:
        """In the child: never returns."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self.signals.clear()
            code = Worker(self.settings, self.sockets, self.scoreboard, index, self.generation, self.pid).run()
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
        if len(live) < wanted and now >= self.spawn_after:
            for _ in range(wanted - len(live)):
                if self.signals or self.spawn() is None:
                    break  # a TERM or INT in the middle of a big pool is answered first
        for worker in live[:max(0, len(live) - self.target)]:
            self._stop_worker(worker, signal.SIGTERM)

    def _check_heartbeats(self, now: float) -> None:
        for worker in list(self.workers.values()):
            if worker.kill_at is not None:
                continue
            slot = self.scoreboard.read(worker.index)
            silent = now - max(slot.heartbeat, worker.spawned)
            if silent > self.settings.timeout:
                log.error("master: worker %d sent no heartbeat for %.0f s (--timeout %g): killing it",
                          worker.pid, silent, self.settings.timeout)
                self._kill(worker, signal.SIGKILL)
                worker.kill_at = now

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
        self.generation += 1
        log.info("master: SIGHUP, starting %d new worker(s); the old ones stop once these are ready",
                 self.target)

    def _finish_reload(self) -> None:
        old = [w for w in self.workers.values() if w.generation < self.generation and not w.stop_sent]
        if not old:
            return
        ready = sum(1 for w in self._live() if self.scoreboard.read(w.index).state == READY)
        if ready >= self.target:
            for worker in old:
                self._stop_worker(worker, signal.SIGTERM)
            systemd.ready(self._status_line())

    def _abort_reload(self) -> None:
        old_generation = max(w.generation for w in self.workers.values() if w.generation < self.generation)
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
            if settings.workers * 2 > self.scoreboard.slots:
                log.error("master: SIGHUP: %d workers need a restart (scoreboard of %d slots); keeping %d",
                          settings.workers, self.scoreboard.slots, self.target)
                settings.workers = self.settings.workers
            else:
                self.target = settings.workers
        self.settings = settings

    def _status_line(self) -> str:
        return "%d worker(s) x %d threads, generation %d" % (self.target, self.settings.threads, self.generation)

    def _cleanup(self) -> None:
        for worker in self.workers.values():
            self._kill(worker, signal.SIGKILL)
        for sock in self.sockets:
            remove_unix_socket(sock)
            sock.close()
        if self.settings.pid:
            try:
                os.unlink(self.settings.pid)
            except OSError:
                pass

    def _write_pid(self) -> None:
        if self.settings.pid:
            with open(self.settings.pid + ".tmp", "w") as f:
                f.write("%d\n" % self.pid)
            os.replace(self.settings.pid + ".tmp", self.settings.pid)


def _addresses(sockets: list) -> list:
    from .listeners import listener_address
    return [listener_address(sock) for sock in sockets]
