"""A FastCGI server for one WSGI app in this process, and `serve()`.

The engine, by role:

    loop.py      the selector loop: accepting, reading, flushing, timers, stopping
    channel.py   one connection: its state, its read side, its requests
    output.py    the write side of a connection: bounded queue, back-pressure
    pool.py      the request threads, and the hand-off of the selector
    request.py   one request inside the engine
    handoff.py   idle connections passed to another worker when this one stops
    server.py    this file: settings, the life of a request, refusals, hooks

The life of a request, all decisions in the loop thread: FCGI_PARAMS complete
-> `start_request` admits it (or refuses it: 413, 503) -> `_schedule` queues
it for a thread when its connection and the pool have room for it (a request
whose body is still arriving runs only while fewer than half the threads hold
such requests; a connection that does not read its output gets no new thread)
-> a pool thread runs `handle_request`: the app, then the end hooks.  A
request refused by the loop (408, 413, 431, 503, 504) goes to a pool thread
too, for its end hooks only: the loop never builds an environ.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable

from . import protocol as p
from .body import ClientDisconnected, RequestBody
from .channel import Channel
from .connection import ParamsTooLarge, RequestStarted
from .environ import build_environ
from .handoff import Handoff
from .listeners import PeerFilter, bind_listeners, listener_address, remove_unix_socket, warn_if_exposed
from .loop import EventLoop
from .pool import WorkerPool
from .request import BodyTimeout, Request, RequestBodyTooLarge, content_length_of
from .settings import check_server_options, server_defaults
from .wsgi import ErrorStream, WSGIApp, base_environ, run_app

log = logging.getLogger("wsgi_fcgi")


class Server:
    """A FastCGI server for one WSGI app in this process.

    `bind` is one address or a list (see `listeners.parse_address`); `sockets`
    are already-listening sockets to serve instead (from a master process or
    gunicorn).  The other keyword arguments are the settings marked `server`
    in settings.py (`keep_alive`, `max_body_size`, ...).  `serve_forever()`
    blocks; `shutdown()` may be called from any thread or a signal handler.
    """

    def __init__(self, app: WSGIApp, bind: str | Iterable[str] | None = None, threads: int = 8, *,
                 sockets: list | None = None, handoff: Handoff | None = None,
                 inline_requests: bool = True, **options) -> None:
        settings = server_defaults()
        settings.update(check_server_options(dict(options, threads=threads)))
        self.settings = settings
        self.app = app
        self.threads = threads = settings["threads"]
        self.script_name = settings["script_name"].rstrip("/")
        self.max_body_size = settings["max_body_size"]
        self.max_queue = settings["max_queue"]
        self.spool_size = settings["spool_size"]
        self.graceful_timeout = settings["graceful_timeout"]
        allowed = settings["allowed_servers"]
        self.peers = (PeerFilter.from_setting(allowed) if isinstance(allowed, str) or allowed is None
                      else PeerFilter(allowed))
        self.multiprocess = settings["multiprocess"]
        self.base_environ = base_environ(multithread=threads > 1, multiprocess=self.multiprocess)
        # Spec 4.1: what one connection accepts (more live ids get FCGI_OVERLOADED,
        # more than threads + queue get 503), so a multiplexing peer can trust it.
        per_connection = min(settings["max_requests_per_connection"], threads + self.max_queue)
        self.get_values = {
            p.MAX_CONNS: str(settings["max_connections"]).encode(),
            p.MAX_REQS: str(per_connection).encode(),
            p.MPXS_CONNS: b"1",
        }
        self.owns_sockets = sockets is None
        self.sockets = (sockets if sockets is not None
                        else bind_listeners(bind, settings["backlog"], settings["socket_mode"]))
        for sock in self.sockets:
            sock.setblocking(False)
        warn_if_exposed(self.sockets, self.peers)

        # A connection may keep at most half the threads busy, and requests
        # whose body is still arriving at most half: complete requests and
        # other connections always find a thread.
        self.per_connection_threads = max(1, threads // 2)
        self.streaming_cap = max(1, threads // 2)
        self.streaming = 0  # requests in threads with their body still arriving
        self.body_waiters: collections.deque = collections.deque()  # started, waiting for a streaming slot
        self._admitted: collections.deque = collections.deque()  # started during the read being handled
        self._count_lock = threading.Lock()
        self.requests_started = 0
        self.requests_ended = 0
        self.handoff = handoff
        self.loop = EventLoop(self, self.sockets, self.peers, handoff)
        # With one thread the loop thread would be a second request thread.
        self.pool = WorkerPool(self, threads, inline=inline_requests and threads > 1)
        self._stopped = threading.Event()
        #: called in the request thread after each request: fn(request)
        self.on_request_end: list[Callable[[Request], None]] = []
        #: called in the loop thread after a round of requests it ran itself: fn()
        self.on_inline_round_end: list[Callable[[], None]] = []

    @property
    def on_tick(self) -> list:
        """Called in the loop thread about once a second (heartbeats, timers)."""
        return self.loop.on_tick

    @property
    def on_report(self) -> list:
        """Called in the loop thread once a time asked for with
        `loop.report_by` has come (the worker's deferred slot writes)."""
        return self.loop.on_report

    @property
    def addresses(self) -> list[str]:
        return [listener_address(sock) for sock in self.sockets]

    @property
    def connections_accepted(self) -> int:
        return self.loop.connections_accepted

    # -- running ------------------------------------------------------------------------

    def serve_forever(self) -> None:
        self.pool.start()
        self.loop.start_accepting()
        log.info("serving on %s with %d threads", ", ".join(self.addresses), self.threads)
        try:
            self.pool.run()
        finally:
            self._cleanup()

    def shutdown(self, graceful: bool = True, timeout: float | None = None, handoff: bool = True) -> None:
        """Stop accepting; with `graceful`, let running requests finish first
        (at most `timeout`, default --graceful-timeout, seconds).  Idle kept
        connections go to another worker of the pool when there is one
        (`handoff`), else they are closed."""
        if timeout is None:
            timeout = self.graceful_timeout if graceful else 0.0
        handoff = handoff and graceful and self.handoff is not None and self.handoff.open
        self.loop.stop(time.monotonic() + timeout, handoff)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def wake(self) -> None:
        self.loop.wake()

    def _cleanup(self) -> None:
        self.loop.close()
        self.pool.stop()
        if self.owns_sockets:
            for sock in self.sockets:
                remove_unix_socket(sock)
                sock.close()
        log.info("stopped")
        self._stopped.set()

    def live_requests(self) -> int:
        return self.requests_started - self.requests_ended

    def all_threads_busy(self) -> bool:
        """Every thread has a request (only said in a pool of worker processes,
        where another worker can take new connections)."""
        return self.multiprocess and self.live_requests() >= self.threads

    # -- admitting and scheduling (loop thread) ------------------------------------------

    def start_request(self, channel: Channel, event: RequestStarted) -> None:
        request = self._register(channel, event)
        if not event.keep_conn:
            # nginx without fastcgi_keep_conn waits for our close, not for END_REQUEST:
            # the connection is never handed to another worker then
            channel.close_after_requests("FCGI_KEEP_CONN clear")
            if not self.loop.not_kept_noted:
                self.loop.note_keep_conn(False)
        elif not self.loop.kept_noted:
            self.loop.note_keep_conn(True)
        if self.max_body_size and event.role != p.AUTHORIZER:
            length = content_length_of(event.params)
            if length is not None and length > self.max_body_size:
                log.warning("%r: CONTENT_LENGTH %s exceeds --max-body-size %d: answering 413",
                            channel, length if length < 1 << 64 else "(huge)", self.max_body_size)
                self.refuse(request, "413 Content Too Large", RequestBodyTooLarge("body too large"))
                return
        # Every live request holds a thread or waits for one.
        if self.live_requests() > self.threads + self.max_queue:
            log.warning("all %d threads busy and %d requests waiting: answering 503", self.threads, self.max_queue)
            self.refuse(request, "503 Service Unavailable")
            return
        # Scheduled once the rest of this read is handled: a GET's empty
        # FCGI_STDIN usually follows its params in the same read, and a request
        # whose input is complete may run in the loop thread without a hand-off.
        self._admitted.append(request)

    def schedule_admitted(self) -> None:
        """After a read: the requests it started go to threads (or wait)."""
        admitted = self._admitted
        while admitted:
            self._schedule(admitted.popleft())

    def _register(self, channel: Channel, event: RequestStarted) -> Request:
        now = time.monotonic()
        request = Request(channel, event, self.spool_size, now)
        channel.had_request = True
        channel.requests[event.request_id] = request
        channel.requests_started += 1
        self.requests_started += 1
        return request

    def refuse_params(self, channel: Channel, event: ParamsTooLarge) -> None:
        log.warning("%r: request %d: FCGI_PARAMS larger than %d bytes, refused", channel, event.request_id,
                    self.settings["max_params_size"])
        request = self._register(channel, RequestStarted(event.request_id, p.RESPONDER, False, []))
        self.refuse(request, "431 Request Header Fields Too Large")
        channel.close_when_idle("params too large")

    def _schedule(self, request: Request) -> None:
        """Hand `request` to a thread now, or park it until there is room."""
        if request.ended or request.dispatched:  # dispatched: its end hooks run (drop_deferred)
            return
        channel = request.channel
        if channel.running >= self.per_connection_threads or channel.output.backlogged:
            channel.deferred.append(request)
            return
        streaming = not request.input_complete()
        if streaming and self._runs_after_its_body(request):
            request.waits_for_body = True
            return
        if streaming and self.streaming >= self.streaming_cap:
            self.body_waiters.append(request)
            return
        with self._count_lock:
            channel.running += 1
            if streaming:
                self.streaming += 1
        request.streaming = streaming
        request.dispatched = True
        self.loop.ready.append(request)

    def _runs_after_its_body(self, request: Request) -> bool:
        """A body of known length that fits in memory is awaited without a
        thread, like waitress and php-fpm do: the request then runs where it
        was read, instead of a thread and the loop taking turns at the GIL
        for each piece (a 64 KiB POST: ten thread switches).  Bodies of
        unknown length (chunked uploads through `fastcgi_request_buffering
        off`) and larger ones stream to the app as they come."""
        if request.role != p.RESPONDER:
            return False
        length = content_length_of(request.params)
        return length is not None and length <= self.spool_size

    def run_deferred(self, channel: Channel) -> None:
        deferred = channel.deferred
        while deferred and channel.running < self.per_connection_threads and not channel.output.backlogged:
            self._schedule(deferred.popleft())

    def run_body_waiters(self) -> None:
        waiters = self.body_waiters
        while waiters and self.streaming < self.streaming_cap:
            self._schedule(waiters.popleft())

    def drop_deferred(self, channel: Channel) -> None:
        """The connection closed: its requests no thread runs yet (parked, or
        awaiting their body) end without a run."""
        channel.deferred.clear()
        for request in [r for r in self.body_waiters if r.channel is channel]:
            self.body_waiters.remove(request)
        for request in list(channel.requests.values()):
            self._queue_end_hooks(request)  # nothing for those a thread runs

    # -- input (loop thread) ------------------------------------------------------------

    def feed_body(self, request: Request, data: bytes) -> None:
        body = request.body
        if not data:
            body.feed_eof()
            if request.waits_for_body:
                request.waits_for_body = False
                self._schedule(request)
            elif self.body_waiters:
                self._input_completed(request)
            return
        request.input_progress = time.monotonic()
        if self.max_body_size and body.received + len(data) > self.max_body_size:
            log.warning("%r: request body of %d bytes exceeds --max-body-size %d: answering 413",
                        request.channel, body.received + len(data), self.max_body_size)
            self.refuse(request, "413 Content Too Large", RequestBodyTooLarge("body too large"))
            return
        try:
            body.feed(data)
        except OSError as exc:  # ENOSPC, EFBIG, EMFILE while spooling to a temporary file
            self.fail_request(request, body, "cannot store the request body", exc)

    def feed_filter_data(self, request: Request, data: bytes) -> None:
        request.input_progress = time.monotonic()
        try:
            if data:
                request.filter_data.feed(data)  # type: ignore[union-attr]
            else:
                request.filter_data.feed_eof()  # type: ignore[union-attr]
                self._input_completed(request)
        except OSError as exc:
            self.fail_request(request, request.filter_data, "cannot store FCGI_DATA", exc)  # type: ignore[arg-type]

    def abort_request(self, request: Request, error: BaseException) -> None:
        """FCGI_ABORT_REQUEST (spec 5.4): the app's input fails with `error`; a
        request awaiting its body gets a thread that only ends it (END_REQUEST)."""
        request.abort(error)
        if request.waits_for_body:
            request.waits_for_body = False
            self._queue_end_hooks(request)

    def _input_completed(self, request: Request) -> None:
        if not request.dispatched and request.input_complete() and request in self.body_waiters:
            self.body_waiters.remove(request)
            self._schedule(request)

    def check_body_deadlines(self, channel: Channel, now: float) -> None:
        timeout = self.settings["body_timeout"]
        for request in list(channel.requests.values()):
            if not request.ended and not request.input_complete() and now - request.input_progress > timeout:
                log.info("%r: request %d: no body for %.0f s (--body-timeout): answering 408",
                         channel, request.request_id, now - request.input_progress)
                self.refuse(request, "408 Request Timeout", BodyTimeout("request body timeout"))

    # -- refusals and failures (loop thread) ------------------------------------------------

    def refuse(self, request: Request, status: str, error: BaseException | None = None) -> None:
        """The one way the engine answers for a request: `status` (if the app's
        head is not out yet), the request ended, its end hooks run in a thread."""
        if request.ended:
            return
        request.abort(error or ClientDisconnected(status))
        request.channel.end_from_loop(request, status, status.partition(" ")[2])
        if not request.dispatched:
            self._queue_end_hooks(request)

    def fail_request(self, request: Request, body: RequestBody, what: str, exc: OSError) -> None:
        """The disk refused `body`, spooled to a temporary file: an operator's
        matter, said in one line (no traceback: the error says it all)."""
        message = "%s in %s: %s" % (what, body.spool_dir, exc.strerror or exc)
        log.error("%r: request %d: %s: answering 500", request.channel, request.request_id, message)
        self.refuse(request, "500 Internal Server Error", ClientDisconnected(message))

    def _queue_end_hooks(self, request: Request) -> None:
        if request.dispatched:
            return
        request.dispatched = True
        with self._count_lock:
            request.channel.running += 1
        self.pool.queue.put(request)  # never inline: the loop builds no environ

    def count_end(self) -> None:
        """A request's END_REQUEST is out (called under its connection's write lock)."""
        with self._count_lock:
            self.requests_ended += 1
        if self.loop.stop_at is not None:
            self.loop.wake()

    # -- a request's thread -------------------------------------------------------------------

    def handle_request(self, request: Request) -> None:
        """Run one request (or only its end hooks, if the loop refused it)."""
        try:
            if not request.ended and not request.aborted:
                environ = self._environ(request)
                environ["wsgi.input"] = request.body
                environ["wsgi.errors"] = ErrorStream(request)
                # As libfcgi does: the app learns its role (web servers rarely send it)
                environ.setdefault("FCGI_ROLE", p.ROLE_NAMES[request.role])
                if request.filter_data is not None:
                    environ["wsgi_fcgi.data"] = request.filter_data
                response = run_app(self.app, environ, request)
                if request.status is None:  # else the loop answered for it (408, 413, 504)
                    request.status = response.status
        except BaseException:
            log.exception("internal error while handling %r", request)
        finally:
            try:
                request.finish()
                if request.environ is None:
                    self._environ(request)
                self._run_end_hooks(request)
            finally:
                # The environ refers back to the request (wsgi.errors): without
                # it the request's objects are freed now, not by the cyclic GC.
                request.environ = None
                self._release(request)

    def _environ(self, request: Request) -> dict:
        environ = build_environ(request.params, self.base_environ, self.script_name)
        request.environ = environ
        request.method = environ.get("REQUEST_METHOD", "")
        request.uri = environ.get("REQUEST_URI", "")
        return environ

    def _run_end_hooks(self, request: Request) -> None:
        for callback in self.on_request_end:
            try:
                callback(request)
            except Exception:
                log.exception("error in a request-end hook")

    def _release(self, request: Request) -> None:
        channel = request.channel
        with self._count_lock:
            channel.running -= 1
            if request.streaming:
                self.streaming -= 1
        if channel.deferred or self.body_waiters:
            self.loop.notify(channel)


def serve(app: WSGIApp, bind: str | Iterable[str] | None = None, threads: int = 8, **options) -> None:
    """Serve `app` over FastCGI in this process until SIGTERM/SIGINT (main thread)
    or `KeyboardInterrupt`."""
    import signal

    server = Server(app, bind=bind, threads=threads, **options)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: server.shutdown(graceful=True))
        signal.signal(signal.SIGINT, lambda *_: server.shutdown(graceful=False))
    server.serve_forever()
