"""One worker process under the master: loads the app itself (so a reload
imports it afresh), serves the listening sockets it inherited, and reports to
its scoreboard slot: a heartbeat about once a second from the loop's tick,
counters after each request."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time

from . import accesslog, logs, privileges, proctitle, systemd
from .apploader import AppImportError, enter_directory, load_app
from .errors import ConfigError, fail
from .memory import prepare_to_serve, resident_memory
from .scoreboard import READY, RETIRING, STARTING, STOPPING, ConnectionShare, Counters, Scoreboard, Slot

# Imported here, before a worker drops its privileges (--user): its user may
# not be able to read the interpreter's files later (a venv under /root).
from .server import Server
from .status import StatusPages
from .watchdog import Watchdog

log = logging.getLogger("wsgi_fcgi")

#: exit status of a worker whose app could not be loaded
BOOT_FAILED = 3


#: `Worker._refresh(ending=ROUND_ENDED)`: the loop thread ended a round of requests it ran
ROUND_ENDED = object()
#: With --pm static, a worker writes its slot at most this often as requests
#: end; the loop writes what is left this long after the last write.  A slot
#: write costs 5-20 us (a tenth of a hello request's instructions when each
#: loop round runs one), a loaded worker ends thousands of requests a second,
#: and in a static pool only the status page reads the slots.  With dynamic
#: and ondemand the master counts busy workers: every end is written.
PUBLISH_INTERVAL = 0.05


class Worker:
    def __init__(self, settings, sockets: list, scoreboard: Scoreboard, index: int, generation: int,
                 master_pid: int | None, app=None, handoff=None) -> None:
        self.settings = settings
        self.handoff = handoff  # a Handoff shared by the pool's workers, or None
        self.app = app  # --preload: the master's, already imported
        self.sockets = sockets
        self.scoreboard = scoreboard
        self.index = index
        self.master_pid = master_pid
        self.server = None
        self.retiring = False
        self.reopen_logs = False
        self.max_requests = 0
        if settings.max_requests:
            self.max_requests = settings.max_requests + random.randint(0, settings.max_requests_jitter)
        self.slot = Slot(pid=os.getpid(), generation=generation, state=STARTING, started=time.time(),
                         heartbeat=time.monotonic(), threads=settings.threads)
        self.counters = Counters()
        # Request threads end requests at the same time: counting and
        # publishing under one lock, so a published counter never goes back.
        self._publish_lock = threading.Lock()
        self._unpublished = False  # requests ended that the slot does not show yet
        self._published_at = 0.0
        self._write_every_end = settings.pm != "static"

    def publish(self) -> None:
        self.scoreboard.write(self.index, self.slot)
        values = self.counters.values  # requests, slow_requests, timed_out, ... (COUNTER_NAMES)
        values[1], values[2] = self.slot.slow_requests, self.slot.timed_out
        self.scoreboard.write_counters(self.index, self.counters)

    def run(self) -> int:
        proctitle.worker_title(self.index + 1, self.settings.pool_name or self.settings.app)
        capture = logs.OutputCapture() if self.settings.capture_output else None
        try:
            return self._run()
        finally:
            if capture is not None:
                capture.stop()

    def _run(self) -> int:
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)  # the master's business
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        self.publish()
        debug = self.settings.log_level == "debug"
        try:
            try:
                self._enter()
                app = self.app if self.app is not None else load_app(self.settings.app)
                self.server = server = self._build_server(app, self.settings.server_options())
            except (AppImportError, ConfigError) as exc:
                fail(str(exc), debug)
            except OSError as exc:
                fail("worker %d: %s" % (os.getpid(), exc), debug)
        except SystemExit:
            return BOOT_FAILED  # cli.fail printed the reason
        signal.signal(signal.SIGTERM, lambda *_: self.stop(graceful=True))
        signal.signal(signal.SIGINT, lambda *_: self.stop(graceful=False))
        signal.signal(signal.SIGQUIT, lambda *_: self.stop(graceful=False))
        signal.signal(signal.SIGUSR1, self._on_usr1)
        prepare_to_serve()
        self.slot.state = READY
        # Alive now: the loop's first tick is a second away, and the app's
        # import may have taken most of --timeout since the fork.
        self.slot.heartbeat = self.slot.idle_since = time.monotonic()
        self.publish()
        if self.master_pid is None:  # --no-master: this process is the service systemd watches
            systemd.ready("serving with %d threads (--no-master)" % self.settings.threads)
        try:
            server.serve_forever()
        finally:
            self.refresh()  # the last requests' counts (PUBLISH_INTERVAL): the master folds them in
        return 0

    def _enter(self) -> None:
        """Become --user/--group, then --chdir by the path as given (a
        symlinked release moved since the last worker started is followed)."""
        privileges.drop(self.settings)
        if self.settings.chdir:
            enter_directory(self.settings.chdir)

    def _build_server(self, app, options: dict):
        settings = self.settings
        if settings.pm != "static":
            app = self._reporting_busy(app)
        if settings.status_path or settings.ping_path:
            app = StatusPages(app, status_path=settings.status_path, ping_path=settings.ping_path,
                              pool=settings.pool_name or settings.app, scoreboard=self.scoreboard,
                              sockets=self.sockets, refresh=self.refresh, show_query=settings.status_show_query)
        server = Server(app, sockets=self.sockets, handoff=self.handoff, **options)
        server.loop.share = ConnectionShare(self.scoreboard, self.index)
        server.on_tick.append(self.tick)
        server.on_request_end.append(self.request_ended)
        server.on_inline_round_end.append(self.inline_round_ended)
        server.on_report.append(self.publish_pending)
        if settings.access_log:
            server.on_request_end.append(accesslog.AccessLogger(settings.access_log_format))
        if settings.slow_request_timeout or settings.request_timeout:
            watchdog = Watchdog(server, settings.slow_request_timeout, settings.request_timeout,
                                on_slow=self._count_slow, on_timeout=self._count_timeout,
                                on_stuck=lambda: self.retire("a request is stuck past --request-timeout"))
            server.loop.call_every(watchdog.interval, watchdog)
        return server

    # -- reporting ---------------------------------------------------------

    def _reporting_busy(self, app):
        """--pm dynamic/ondemand: the slot is refreshed as each request
        starts too (else only at request ends and ticks), so the master
        counts busy threads exactly: it must not take a worker that just got
        a request for a spare, stop it as idle, or miss that all its threads
        are busy.  A few microseconds per request, only in those modes."""
        refresh = self.refresh

        def app_reporting_busy(environ, start_response):
            refresh()
            return app(environ, start_response)
        return app_reporting_busy

    def refresh(self, ending=None) -> None:
        """Publish the threads' current requests (but `ending`) and the counters.

        Called at every request end, while the ending thread still counts as
        busy, so that no peak of concurrency is missed: one pass, no dicts.
        """
        with self._publish_lock:
            self._refresh(ending)

    def _refresh(self, ending) -> None:
        """`ending`: the request ending, or ROUND_ENDED; None from a tick."""
        slot = self.slot
        oldest = None
        busy = 1 if ending is ROUND_ENDED else 0  # the loop thread, which ran the round
        active = 0
        for thread in self.server.pool:
            request = thread.request
            if request is not None:
                busy += 1
                if request is not ending:
                    active += 1
                    if oldest is None or request.started < oldest.started:
                        oldest = request
        slot.max_active = max(slot.max_active, busy)
        now = time.monotonic()
        if ending is not None and not self._write_every_end and now - self._published_at < PUBLISH_INTERVAL:
            # Written later (the peak is kept in max_active meanwhile)
            self._unpublished = True
            self.server.loop.report_by(self._published_at + PUBLISH_INTERVAL, wake=ending is not ROUND_ENDED)
            return
        slot.active = active
        if active:
            slot.idle_since = 0.0
        elif ending is not None or not slot.idle_since:
            slot.idle_since = now  # idle from now (--pm dynamic/ondemand count on it)
        self._published_at = now
        slot.requests = self.server.requests_ended
        if oldest is None:
            slot.request_since, slot.method, slot.uri = 0.0, b"", b""
        else:
            slot.request_since = oldest.started
            slot.method, slot.uri = self._request_line(oldest)
        self._unpublished = False
        self.publish()

    @staticmethod
    def _request_line(request) -> tuple[bytes, bytes]:
        """(method, uri) of a running request (WSGI strings, "" until its
        environ is built) as the scoreboard keeps them."""
        return request.method.encode("latin-1", "replace"), request.uri.encode("latin-1", "replace")

    def tick(self) -> None:
        if self.master_pid is not None and os.getppid() != self.master_pid:
            log.error("worker %d: the master is gone; stopping", os.getpid())
            self.stop(graceful=True)
        if self.reopen_logs:
            self.reopen_logs = False
            accesslog.reopen_log_files()
        self.slot.heartbeat = time.monotonic()  # from the loop thread: a stuck loop stops it
        self.check_memory()
        self.refresh()

    def check_memory(self) -> None:
        """Publish the resident memory; past --max-worker-memory, retire.
        From the tick, and with a limit after every request too (as uWSGI's
        reload-on-rss: a leak of a second's requests may be far past it);
        reading /proc/self/statm costs a few microseconds."""
        self.slot.rss = rss = resident_memory()
        limit = self.settings.max_worker_memory
        if limit and rss > limit and not self.retiring:
            self.retire("uses %d MiB, above --max-worker-memory %d MiB" % (rss >> 20, limit >> 20))

    def request_ended(self, request) -> None:
        # Sampled at every request end, while the ending thread still counts as
        # busy: so no peak of concurrency is missed.  The loop thread's own
        # requests are published once its round of them is over: a slot write
        # costs 5-8 us of a 60-80 us request in a loaded worker.
        bytes_in = getattr(request, "bytes_in", None)
        if bytes_in is None:
            bytes_in = request.body.received
        duration = time.monotonic() - request.started
        with self._publish_lock:
            self.counters.count_request(request.status, request.aborted, bytes_in, request.bytes_out, duration)
            if threading.current_thread() is self.server.pool.loop_thread:
                self._unpublished = True
            else:
                self._refresh(request)
        served = self.server.requests_ended
        if self.max_requests and served >= self.max_requests:
            self.retire("served %d requests (--max-requests)" % served)
        if self.settings.max_worker_memory:
            self.check_memory()

    def publish_pending(self) -> None:
        if self._unpublished:
            self.refresh()

    def inline_round_ended(self) -> None:
        if self._unpublished:
            with self._publish_lock:
                self._refresh(ROUND_ENDED)

    def _count_slow(self) -> None:
        self.slot.slow_requests += 1

    def _count_timeout(self) -> None:
        self.slot.timed_out += 1

    # -- stopping ----------------------------------------------------------

    def retire(self, why: str) -> None:
        """Stop accepting, finish the running requests, exit; the master
        replaces this worker as soon as it sees RETIRING."""
        if self.retiring:
            return
        self.retiring = True
        log.info("worker %d %s: retiring", os.getpid(), why)
        self.slot.state = RETIRING
        self.publish()
        self.server.shutdown(graceful=True)

    def stop(self, graceful: bool) -> None:
        if self.master_pid is None:
            systemd.stopping("%s stop" % ("graceful" if graceful else "quick"))
        if not self.retiring:
            self.slot.state = STOPPING
            self.publish()
        self.server.shutdown(graceful=graceful)

    def _on_usr1(self, *_) -> None:
        self.reopen_logs = True
        self.server.wake()
