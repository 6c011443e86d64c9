"""The I/O engine of one process: a selector loop for connections, a thread
pool for the app.

One thread runs the selector: it accepts, reads, feeds the protocol state
machine (`connection.ServerConnection`) and queues each request whose params
are complete.  Idle keep-alive connections cost no thread.  Pool threads run
the app and write the response to the socket themselves, a whole small
response in one `sendall`, so there is no hand-off back to the loop and no
per-record syscall.  What the loop itself must write (management answers,
refusals) goes through a per-connection queue flushed by whoever holds the
connection's write lock, so the loop never blocks behind a slow writer.
"""

from __future__ import annotations

import collections
import errno
import logging
import queue
import selectors
import socket
import struct
import threading
import time
from typing import Callable, Iterable, Optional, Union

from . import protocol as p
from .body import ClientDisconnected, RequestBody
from .connection import (FilterDataReceived, Ignored, ParamsTooLarge, Reply, RequestAborted,
                         RequestStarted, ServerConnection, StdinReceived)
from .listeners import (PeerFilter, bind_listeners, listener_address, remove_unix_socket,
                        warn_if_exposed)
from .settings import check_server_options, server_defaults
from .wsgi import ErrorStream, WSGIApp, base_environ, build_environ, run_app, simple_response

log = logging.getLogger("wsgi_fcgi")

_RECV_SIZE = 256 * 1024
_TICK = 1.0
#: How long a closing connection may take to send us its unread input.
_DRAIN_TIMEOUT = 5.0
_ACCEPTS_PER_EVENT = 16
#: Response chunks at least this large go out framed by sendmsg(), uncopied.
_GATHER_SIZE = 32 * 1024
_IOV_MAX = 1000
#: A request the loop thread runs itself and that takes longer than this
#: makes the standby (the thread in serve_forever) take over the selector.
_INLINE_TAKEOVER = 0.010
_MONITOR_INTERVAL = 0.005
#: How long a stopping server waits for the first request of a connection it
#: accepted: a web server opens a connection to send a request at once.
_FIRST_REQUEST_GRACE = 2.0
#: Answers the loop may queue for a peer that does not read them (management
#: records, refusals) before the connection is dropped as abusive.
_MAX_PENDING_REPLIES = 1024


class RequestBodyTooLarge(ClientDisconnected):
    """The body grew past --max-body-size while the app was reading it."""


class Request:
    """One FastCGI request: its input, and the transport its response goes to."""

    __slots__ = ("channel", "request_id", "role", "keep_conn", "params", "body", "filter_data",
                 "ended", "aborted", "bytes_out", "started", "environ", "status")

    def input_complete(self) -> bool:
        """All of FCGI_STDIN (and FCGI_DATA) is here: the app cannot wait on the loop."""
        return self.body.complete and (self.filter_data is None or self.filter_data.complete)

    def __init__(self, channel: "Channel", event: RequestStarted, spool_size: int) -> None:
        self.channel = channel
        self.request_id = event.request_id
        self.role = event.role
        self.keep_conn = event.keep_conn
        self.params = event.params
        self.body = RequestBody(spool_size)
        if event.role == p.AUTHORIZER:
            self.body.feed_eof()  # spec 6.3: an authorizer gets no FCGI_STDIN
        self.filter_data = RequestBody(spool_size) if event.role == p.FILTER else None
        self.ended = False
        self.aborted = False
        self.bytes_out = 0
        self.started = time.monotonic()
        self.environ: Optional[dict] = None
        self.status: Optional[str] = None

    # -- transport for wsgi.run_app --------------------------------------

    def send(self, data: bytes, end: bool) -> bool:
        return self.channel.send_response(self, data, end)

    def send_stderr(self, data: bytes) -> None:
        self.channel.send_stderr(self, data)

    def finish(self) -> None:
        """Make sure FCGI_END_REQUEST went out (spec 5.4: also after an abort)."""
        if not self.ended:
            self.channel.send_response(self, b"", True)
        self.body.close()
        if self.filter_data is not None:
            self.filter_data.close()

    def abort(self, error: BaseException) -> None:
        self.aborted = True
        self.body.fail(error)
        if self.filter_data is not None:
            self.filter_data.fail(error)


class Channel:
    """The I/O side of one connection from the web server."""

    def __init__(self, server: "Server", sock: socket.socket, peer) -> None:
        self.server = server
        self.sock = sock
        self.fileno = sock.fileno()
        self.peer = peer
        self.state = ServerConnection(values=server.get_values, max_requests=server.max_requests_per_connection,
                                      max_params_size=server.max_params_size)
        self.requests: dict[int, Request] = {}
        self.lock = threading.Lock()
        self.pending: collections.deque = collections.deque()
        self.unsent = b""  # loop output the kernel did not take yet; goes out first
        self.unsent_since = 0.0
        self.last_activity = self.opened = time.monotonic()
        self.record_started: Optional[float] = None  # when the partial record began
        self.had_request = False
        self.close_when_idle = False
        self.write_closed = False  # we sent FIN; reading what is left
        self.lost = False  # the peer is gone or the socket failed
        self.released = False

    def awaiting_first_request(self, now: float) -> bool:
        """Closing this idle connection now would fail the request on its way."""
        return not self.had_request and now - self.opened < _FIRST_REQUEST_GRACE

    def __repr__(self) -> str:
        return "<connection from %s>" % ("%s:%d" % self.peer[:2] if self.peer else "unix socket")

    # -- reading (loop thread) --------------------------------------------

    def on_readable(self) -> None:
        try:
            # Into one reused buffer: a fresh 256 KiB bytes per recv() would
            # cost an mmap/mremap/munmap per request.
            view = self.server.recv_view
            data = view[:self.sock.recv_into(view, _RECV_SIZE, socket.MSG_DONTWAIT)].tobytes()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("%r: read failed: %s", self, exc)
            data = b""
        if not data:
            self.on_peer_closed()
            return
        self.last_activity = time.monotonic()
        if self.write_closed:
            return  # draining input of a connection we are closing
        try:
            events = self.state.receive_data(data)
        except p.ProtocolError as exc:
            log.warning("%r: protocol error, closing the connection: %s", self, exc)
            self.fail_all(ClientDisconnected("protocol error"))
            self.close_now()
            return
        # --read-timeout counts from the first byte of a record, so a peer
        # trickling a byte at a time (slowloris) cannot hold it open forever.
        if not self.state.pending_bytes:
            self.record_started = None
        elif self.record_started is None:
            self.record_started = self.last_activity
        server = self.server
        for event in events:
            if self.lost:
                return  # dropped while handling an earlier record
            kind = type(event)
            if kind is RequestStarted:
                server.start_request(self, event)
            elif kind is StdinReceived:
                request = self.requests.get(event.request_id)
                if request is not None:
                    server.feed_body(request, event.data)
            elif kind is Reply:
                self.send_from_loop(event.data)
            elif kind is FilterDataReceived:
                request = self.requests.get(event.request_id)
                if request is not None and request.filter_data is not None:
                    if event.data:
                        request.filter_data.feed(event.data)
                    else:
                        request.filter_data.feed_eof()
            elif kind is RequestAborted:
                request = self.requests.get(event.request_id)
                if request is not None:
                    log.debug("%r: request %d aborted by the web server", self, event.request_id)
                    request.abort(ClientDisconnected("request aborted by the web server"))
            elif kind is ParamsTooLarge:
                log.warning("%r: request %d: FCGI_PARAMS larger than %d bytes, refused",
                            self, event.request_id, server.max_params_size)
                self.state.finish_request(event.request_id)
                self.send_from_loop(p.encode_stream(p.STDOUT, event.request_id, simple_response(
                    "431 Request Header Fields Too Large", "Request Header Fields Too Large"))
                    + p.encode_stdout_end(event.request_id))
                self.close_when_idle = True
                self.close_if_idle()
            elif kind is Ignored:
                log.debug("%r: ignored %r: %s", self, event.record, event.reason)

    def on_peer_closed(self) -> None:
        if self.requests and not self.write_closed:
            log.debug("%r: the web server closed the connection with %d request(s) running",
                      self, len(self.requests))
        self.fail_all(ClientDisconnected("connection closed by the web server"))
        self.close_now()

    def fail_all(self, error: BaseException) -> None:
        self.lost = True
        for request in list(self.requests.values()):
            request.abort(error)

    # -- writing (any thread) ---------------------------------------------

    def send_response(self, request: Request, data: bytes, end: bool) -> bool:
        request_id = request.request_id
        tail = p.encode_stdout_end(request_id) if end else b""
        if len(data) >= _GATHER_SIZE:
            out = p.stream_parts(p.STDOUT, request_id, data)
            out.append(tail)
        else:
            out = (p.encode_stream(p.STDOUT, request_id, data) if data else b"") + tail
        with self.lock:
            if request.ended or (request.aborted and not end):
                return False
            if end:
                self._end(request)
            if self.lost:
                self._release_if_done()
                return False
            try:
                if type(out) is list:
                    out.insert(0, self._take_unsent())
                    self._send_parts(out)
                else:
                    self.sock.sendall(self._take_unsent() + out)
            except OSError as exc:
                self._write_failed(exc)
                return False
            request.bytes_out += len(data)
        if self.pending:
            self.flush_pending()
        if end:
            if not request.keep_conn:
                self.close_when_idle = True
            if self.close_when_idle:
                self.close_if_idle()
        return True

    def send_stderr(self, request: Request, data: bytes) -> None:
        out = p.encode_stream(p.STDERR, request.request_id, data)
        with self.lock:
            if request.ended or self.lost:
                return
            try:
                self.sock.sendall(self._take_unsent() + out)
            except OSError as exc:
                self._write_failed(exc)

    def end_from_loop(self, request: Request, status: str, text: str) -> None:
        """End a request from outside its thread (limits, timeouts): the
        response is `status` with `text`, unless the app's head is out already."""
        def end() -> bytes:
            if request.ended:
                return b""
            rid = request.request_id
            out = b""
            if request.bytes_out == 0:
                response = simple_response(status, text)
                request.status = status
                request.bytes_out = len(response)
                out = p.encode_stream(p.STDOUT, rid, response)
            self._end(request)
            return out + p.encode_stdout_end(rid)
        self.pending.append(end)
        self.flush_pending()
        if not request.keep_conn:
            # nginx without fastcgi_keep_conn waits for our close, not for END_REQUEST
            self.close_when_idle = True
            self.close_if_idle()

    def send_from_loop(self, data: bytes) -> None:
        if len(self.pending) >= _MAX_PENDING_REPLIES:
            log.warning("%r: %d answers queued that the peer does not read, closing the connection",
                        self, len(self.pending))
            self.fail_all(ClientDisconnected("peer does not read its answers"))
            self.close_now()
            return
        self.pending.append(data)
        self.flush_pending()

    def flush_pending(self) -> None:
        """Write queued loop output; whoever holds the lock last does it.

        Never blocking: the loop thread must not wait for one peer that does
        not read (every connection would stall).  What the kernel does not
        take now stays in `unsent`, sent before anything else by the next
        response on this connection or the next tick.
        """
        while (self.pending or self.unsent) and self.lock.acquire(blocking=False):
            try:
                if not self._flush_locked():
                    return
            finally:
                self.lock.release()

    def _flush_locked(self) -> bool:
        """False while the peer's receive window is full."""
        while True:
            if self.unsent and not self.lost:
                try:
                    sent = self.sock.send(self.unsent, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as exc:
                    self.unsent = b""
                    self._write_failed(exc)
                    continue
                if sent < len(self.unsent):
                    if sent or not self.unsent_since:
                        self.unsent_since = time.monotonic()
                    self.unsent = self.unsent[sent:]
                    return False
            self.unsent = b""
            self.unsent_since = 0.0
            if not self.pending:
                return True
            item = self.pending.popleft()
            self.unsent = item() if callable(item) else item

    def _send_parts(self, parts: list) -> None:
        """sendall() for a list of buffers, in as few sendmsg() calls as the
        kernel allows (large bodies are framed without copying them)."""
        index = 0
        while index < len(parts):
            sent = self.sock.sendmsg(parts[index:index + _IOV_MAX])
            while sent:
                size = len(parts[index])
                if sent >= size:
                    sent -= size
                    index += 1
                else:
                    parts[index] = memoryview(parts[index])[sent:]
                    sent = 0
            while index < len(parts) and not len(parts[index]):
                index += 1

    def _take_unsent(self) -> bytes:
        """Under the lock: loop output still owed to the peer, to send first."""
        data, self.unsent, self.unsent_since = self.unsent, b"", 0.0
        return data

    def _end(self, request: Request) -> None:
        """Mark `request` ended (under the lock), before its END_REQUEST leaves,
        so that a new BEGIN_REQUEST for the same id is valid at once."""
        request.ended = True
        self.state.finish_request(request.request_id)
        self.requests.pop(request.request_id, None)
        self.server.request_ended(request)

    def _write_failed(self, exc: OSError) -> None:
        if exc.errno == errno.EAGAIN:
            log.info("%r: peer did not read for %.0f s, dropping the connection", self, self.server.write_timeout)
        elif exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
            log.info("%r: write failed: %s", self, exc)
        else:
            log.debug("%r: write failed: %s", self, exc)
        self.lost = True
        for request in list(self.requests.values()):
            request.abort(ClientDisconnected("connection lost"))
        self.server.wake()

    # -- closing -----------------------------------------------------------

    def close_if_idle(self) -> None:
        """Close once no request is live (FCGI_KEEP_CONN clear, or stopping)."""
        with self.lock:
            if self.requests or self.write_closed or self.released or self.pending or self.unsent:
                return
            self.write_closed = True
            try:
                # FIN first and read until the peer closes too: closing with
                # unread input would make the kernel send a reset.
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.lost = True
        self.last_activity = time.monotonic()
        self.server.wake()

    def close_now(self) -> None:
        self.lost = True
        self.server.unregister(self)
        with self.lock:
            self._release_if_done()

    def _release_if_done(self) -> None:
        """Close the socket once the loop has let go of it and no thread writes."""
        if not self.released and self.lost and not self.requests and self.server.is_unregistered(self):
            self.released = True
            try:
                self.sock.close()
            except OSError:
                pass


class PoolThread(threading.Thread):
    """A request thread; `request` is what it runs now (for status and slow logs)."""

    def __init__(self, server: "Server", index: int) -> None:
        super().__init__(name="wsgi-fcgi-%d" % index, daemon=True)
        self.server = server
        self.request: Optional[Request] = None
        self.slow_logged = False

    def run(self) -> None:
        get = self.server.queue.get
        while True:
            try:
                request = get()
                if request is None:
                    return
                self.run_request(request)
            except Exception as exc:  # an interrupt aimed at a request that just ended
                log.debug("%s: stray %r between requests", self.name, exc)

    def run_request(self, request: Request) -> None:
        self.request = request
        self.slow_logged = False
        try:
            self.server.handle_request(request)
        finally:
            self.request = None


class LoopThread(PoolThread):
    """Runs the selector loop, and the requests whose input is complete itself.

    Handing each request to a pool thread costs two thread switches and a
    fight for the GIL (about a third of the CPU of a small request).  While an
    inline request runs, nobody polls; when it takes longer than
    _INLINE_TAKEOVER, the standby thread takes the selector over and hands
    requests to the pool until this thread is free again.
    """

    def __init__(self, server: "Server") -> None:
        super().__init__(server, 0)
        self.name = "wsgi-fcgi-loop"

    def run(self) -> None:
        server = self.server
        while True:
            try:
                if server.run_loop() or not server.wait_for_loop(self):
                    return
            except Exception as exc:  # an interrupt aimed at a request that just ended
                log.debug("%s: stray %r in the loop", self.name, exc)


class Server:
    """A FastCGI server for one WSGI app in this process.

    `bind` is one address or a list (see `listeners.parse_address`); `sockets`
    are already-listening sockets to serve instead (from a master process or
    gunicorn).  `serve_forever()` blocks; `shutdown()` may be called from any
    thread or a signal handler.
    """

    def __init__(self, app: WSGIApp, bind: Union[str, Iterable[str], None] = None, threads: int = 8, *,
                 sockets: Optional[list] = None, inline_requests: bool = True, **options) -> None:
        settings = server_defaults()
        settings.update(check_server_options(dict(options, threads=threads)))
        threads = settings["threads"]
        self.app = app
        self.threads = threads
        self.script_name = settings["script_name"].rstrip("/")
        self.max_body_size = settings["max_body_size"]
        self.max_params_size = settings["max_params_size"]
        self.max_connections = max_connections = settings["max_connections"]
        self.max_queue = max_queue = settings["max_queue"]
        self.max_requests_per_connection = settings["max_requests_per_connection"]
        self.keepalive_timeout = settings["keep_alive"]
        self.read_timeout = settings["read_timeout"]
        self.write_timeout = settings["write_timeout"]
        self.spool_size = settings["spool_size"]
        self.graceful_timeout = settings["graceful_timeout"]
        backlog, socket_mode = settings["backlog"], settings["socket_mode"]
        allowed_servers = settings["allowed_servers"]
        multiprocess = options.get("multiprocess", False)
        # With one thread the loop thread would be a second request thread.
        self.inline_requests = inline_requests and threads > 1
        if isinstance(allowed_servers, str) or allowed_servers is None:
            self.peers = PeerFilter.from_setting(allowed_servers)
        else:
            self.peers = PeerFilter(allowed_servers)
        self.base_environ = base_environ(multithread=threads > 1, multiprocess=multiprocess)
        self.get_values = {
            p.MAX_CONNS: str(max_connections).encode(),
            p.MAX_REQS: str(threads + max_queue).encode(),
            p.MPXS_CONNS: b"1",
        }
        self.owns_sockets = sockets is None
        self.sockets = sockets if sockets is not None else bind_listeners(bind, backlog, socket_mode)
        for sock in self.sockets:
            sock.setblocking(False)
        warn_if_exposed(self.sockets, self.peers)

        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.pool: list[PoolThread] = []
        self._ready: collections.deque = collections.deque()  # requests started this loop round
        self._loop_thread: Optional[LoopThread] = None
        self._owner: Optional[threading.Thread] = None  # the thread running the selector
        self._owner_lock = threading.Lock()
        self._inline_since = 0.0  # when the loop thread started its inline request, 0 if none
        self._loop_wanted = False  # the loop thread is free again and wants the selector back
        self._loop_returned = threading.Event()
        self._loop_done = threading.Event()
        self.channels: dict[int, Channel] = {}
        self.recv_view = memoryview(bytearray(_RECV_SIZE))  # the loop thread's read buffer
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._accepting = False
        self._stop_at: Optional[float] = None  # graceful stop deadline
        self._stopped = threading.Event()
        self._running = False
        self.started_at = time.time()
        self.requests_started = 0
        self.requests_ended = 0
        self._count_lock = threading.Lock()
        self.connections_accepted = 0
        #: called in the loop thread about once a second (heartbeats, timers)
        self.on_tick: list[Callable[[], None]] = []
        #: called in the request thread after each request: fn(request)
        self.on_request_end: list[Callable[[Request], None]] = []

    @property
    def addresses(self) -> list[str]:
        return [listener_address(sock) for sock in self.sockets]

    # -- running -------------------------------------------------------------

    def serve_forever(self) -> None:
        self._running = True
        # With inline requests the loop thread is one of the `threads`; a
        # request whose body is still arriving always needs a pool thread.
        pool_size = max(1, self.threads - 1) if self.inline_requests else self.threads
        for index in range(1, pool_size + 1):
            thread = PoolThread(self, index)
            thread.start()
            self.pool.append(thread)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._start_accepting()
        log.info("serving on %s with %d threads", ", ".join(self.addresses), self.threads)
        try:
            if self.inline_requests:
                self._loop_thread = LoopThread(self)
                self.pool.insert(0, self._loop_thread)
                self._owner = self._loop_thread
                self._loop_thread.start()
                self._stand_by()
            else:
                self._owner = threading.current_thread()
                self.run_loop()
        finally:
            self._cleanup()

    def run_loop(self) -> bool:
        """Run the selector until the server stops (True) or this thread loses
        the selector (False): the loop thread to the standby while it runs a
        long request, the standby back to the loop thread."""
        me = threading.current_thread()
        inline = me is self._loop_thread
        select = self.selector.select
        next_tick = time.monotonic() + _TICK
        while True:
            for key, _ in select(_TICK):
                key.data()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + _TICK
                self._tick(now)
            if self._stop_at is not None and (now >= self._stop_at or (
                    not self.live_requests() and not self._awaiting_first_requests(now))):
                self._loop_done.set()
                return True
            if self._ready and not self._dispatch_ready(inline):
                return False
            if self._loop_wanted and not inline:
                self._give_loop_back()
                return False

    def _dispatch_ready(self, inline: bool) -> bool:
        """Queue the requests started this round, or run them here when their
        input is complete.  False: the standby took the selector meanwhile."""
        ready = self._ready
        queue_put = self.queue.put
        while ready:
            request = ready.popleft()
            if not inline or request.ended or not request.input_complete():
                queue_put(request)
                continue
            self._inline_since = time.monotonic()
            self._loop_thread.run_request(request)
            with self._owner_lock:
                self._inline_since = 0.0
                if self._owner is not self._loop_thread:
                    return False
        return True

    def _stand_by(self) -> None:
        """The serve_forever thread: take the selector over while the loop
        thread is stuck in a long request, until the server stops."""
        me = threading.current_thread()
        while not self._loop_done.wait(_MONITOR_INTERVAL):
            started = self._inline_since
            if not started or time.monotonic() - started < _INLINE_TAKEOVER:
                continue
            with self._owner_lock:
                if self._inline_since != started:
                    continue  # that request just ended
                self._owner = me
            while self._ready:  # requests the loop thread had not reached
                self.queue.put(self._ready.popleft())
            if self.run_loop():
                return

    def wait_for_loop(self, thread: LoopThread) -> bool:
        """The loop thread is free again: get the selector back from the
        standby.  False if the server stopped meanwhile."""
        self._loop_returned.clear()
        self._loop_wanted = True
        self.wake()
        while not self._loop_done.is_set():
            if self._loop_returned.wait(0.1):
                return True
        return False

    def _give_loop_back(self) -> None:
        with self._owner_lock:
            self._owner = self._loop_thread
            self._loop_wanted = False
        self._loop_returned.set()

    def shutdown(self, graceful: bool = True, timeout: Optional[float] = None) -> None:
        """Stop accepting; with `graceful`, let running requests finish first
        (at most `timeout`, default `graceful_timeout`, seconds)."""
        if timeout is None:
            timeout = self.graceful_timeout if graceful else 0.0
        deadline = time.monotonic() + timeout
        if self._stop_at is None or deadline < self._stop_at:
            self._stop_at = deadline
        self.wake()

    def wait_stopped(self, timeout: Optional[float] = None) -> bool:
        return self._stopped.wait(timeout)

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake, or shutting down

    def _on_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        if self._stop_at is not None:
            self._begin_stop()

    def _begin_stop(self) -> None:
        if self._accepting:
            self._stop_accepting()
            for sock in self.sockets:
                self.selector.unregister(sock)
        now = time.monotonic()
        for channel in list(self.channels.values()):
            channel.close_when_idle = True
            if not channel.awaiting_first_request(now):
                channel.close_if_idle()

    def _tick(self, now: float) -> None:
        for channel in list(self.channels.values()):
            if channel.unsent or channel.pending:
                channel.flush_pending()
            idle = now - channel.last_activity
            if channel.write_closed:
                if idle > _DRAIN_TIMEOUT or channel.lost:
                    channel.close_now()
            elif channel.lost and not channel.requests:
                channel.close_now()
            elif channel.close_when_idle and not channel.requests and not channel.awaiting_first_request(now):
                channel.close_if_idle()
            elif channel.record_started is not None and now - channel.record_started > self.read_timeout:
                log.info("%r: a record incomplete after %.0f s (--read-timeout), closing",
                         channel, now - channel.record_started)
                channel.fail_all(ClientDisconnected("read timeout"))
                channel.close_now()
            elif channel.unsent_since and self.write_timeout and now - channel.unsent_since > self.write_timeout:
                log.info("%r: peer did not read for %.0f s, dropping the connection", channel, self.write_timeout)
                channel.fail_all(ClientDisconnected("write timeout"))
                channel.close_now()
            elif not channel.requests and self.keepalive_timeout and idle > self.keepalive_timeout:
                log.debug("%r: idle for %.0f s, closing", channel, idle)
                channel.close_if_idle()
        if self._stop_at is not None:
            self._begin_stop()
        for callback in self.on_tick:
            callback()

    def _cleanup(self) -> None:
        self._running = False
        if self._accepting:
            self._stop_accepting()
        for channel in list(self.channels.values()):
            channel.fail_all(ClientDisconnected("server stopping"))
            channel.close_now()
        for _ in self.pool:
            self.queue.put(None)
        deadline = time.monotonic() + 1.0
        for thread in self.pool:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.owns_sockets:
            for sock in self.sockets:
                remove_unix_socket(sock)
                sock.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
        log.info("stopped")
        self._loop_done.set()
        self._stopped.set()

    # -- connections ------------------------------------------------------------

    def _start_accepting(self) -> None:
        for sock in self.sockets:
            self.selector.register(sock, selectors.EVENT_READ, lambda s=sock: self._accept(s))
        self._accepting = True

    def _stop_accepting(self) -> None:
        self._accepting = False

    def _accept(self, listener: socket.socket) -> None:
        if not self._accepting:
            return
        for _ in range(_ACCEPTS_PER_EVENT):
            if len(self.channels) >= self.max_connections:
                self._pause_accepting()
                return
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept a connection: %s", exc)
                    self._pause_accepting()
                return
            if not self.peers.allows(peer):
                log.warning("refused a connection from %s: not in --allowed-servers", peer[0])
                sock.close()
                continue
            self._add_channel(sock, peer)

    def _pause_accepting(self) -> None:
        """Leave further connections in the listen backlog until one closes."""
        for sock in self.sockets:
            try:
                self.selector.unregister(sock)
            except KeyError:
                pass
        self._accepting = False

    def _resume_accepting(self) -> None:
        if not self._accepting and self._stop_at is None and self._running:
            self._start_accepting()

    def _add_channel(self, sock: socket.socket, peer) -> None:
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking with a kernel send timeout rather than settimeout(): a Python
        # timeout adds a poll() before every send and recv.
        sock.setblocking(True)
        if self.write_timeout:
            seconds = int(self.write_timeout)
            micros = int((self.write_timeout - seconds) * 1e6)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros))
        channel = Channel(self, sock, peer if isinstance(peer, tuple) else None)
        self.channels[channel.fileno] = channel
        self.selector.register(sock, selectors.EVENT_READ, channel.on_readable)
        self.connections_accepted += 1

    def unregister(self, channel: Channel) -> None:
        if self.channels.pop(channel.fileno, None) is channel:
            try:
                self.selector.unregister(channel.sock)
            except (KeyError, ValueError):
                pass
            if not self._accepting and len(self.channels) < self.max_connections:
                self._resume_accepting()

    def is_unregistered(self, channel: Channel) -> bool:
        return self.channels.get(channel.fileno) is not channel

    def live_requests(self) -> int:
        return self.requests_started - self.requests_ended

    def _awaiting_first_requests(self, now: float) -> bool:
        return any(channel.awaiting_first_request(now) for channel in self.channels.values())

    # -- requests -----------------------------------------------------------------

    def start_request(self, channel: Channel, event: RequestStarted) -> None:
        request = Request(channel, event, self.spool_size)
        channel.had_request = True
        channel.requests[event.request_id] = request
        self.requests_started += 1
        if self.max_body_size and event.role != p.AUTHORIZER:
            length = content_length_of(event.params)
            if length is not None and length > self.max_body_size:
                self._refuse_too_large(request, length)
                self._run_end_hooks(request)  # it never reaches a thread
                return
        # Every live request holds a thread or waits for one (in the queue, or
        # in _ready until the end of this loop round).
        if self.live_requests() > self.threads + self.max_queue:
            log.warning("all %d threads busy and %d requests queued: answering 503",
                        self.threads, self.max_queue)
            self._refuse_before_app(request, "503 Service Unavailable")
            return
        self._ready.append(request)  # dispatched at the end of the loop round

    def feed_body(self, request: Request, data: bytes) -> None:
        if not data:
            request.body.feed_eof()
            return
        if self.max_body_size and request.body.received + len(data) > self.max_body_size:
            self._refuse_too_large(request, request.body.received + len(data))
            return
        request.body.feed(data)

    def _refuse_too_large(self, request: Request, size: int) -> None:
        log.warning("%r: request body of %d bytes exceeds --max-body-size %d: answering 413",
                    request.channel, size, self.max_body_size)
        request.abort(RequestBodyTooLarge("request body larger than %d bytes" % self.max_body_size))
        request.channel.end_from_loop(request, "413 Content Too Large", "Content Too Large")

    def _refuse_before_app(self, request: Request, status: str) -> None:
        request.channel.end_from_loop(request, status, status.partition(" ")[2])
        self._run_end_hooks(request)

    def _run_end_hooks(self, request: Request) -> None:
        """The on_request_end hooks (access log, counters) for every request,
        also the ones refused before a thread ran them."""
        if request.environ is None:
            request.environ = build_environ(request.params, self.base_environ, self.script_name)
        for callback in self.on_request_end:
            try:
                callback(request)
            except Exception:
                log.exception("error in a request-end hook")

    def request_ended(self, request: Request) -> None:
        with self._count_lock:
            self.requests_ended += 1
        if self._stop_at is not None:
            self.wake()

    def handle_request(self, request: Request) -> None:
        """Run one request: in a pool thread, or inline in the loop thread."""
        try:
            if not request.ended and not request.aborted:
                environ = build_environ(request.params, self.base_environ, self.script_name)
                environ["wsgi.input"] = request.body
                environ["wsgi.errors"] = ErrorStream(request)
                # As libfcgi does: the app learns its role (web servers rarely send it)
                environ.setdefault("FCGI_ROLE", p.ROLE_NAMES[request.role])
                if request.filter_data is not None:
                    environ["wsgi_fcgi.data"] = request.filter_data
                request.environ = environ
                response = run_app(self.app, environ, request)
                if request.status is None:  # else the loop answered for it (413, 504)
                    request.status = response.status
        except BaseException:
            log.exception("internal error while handling a request")
        finally:
            request.finish()
            self._run_end_hooks(request)


def content_length_of(params: list) -> Optional[int]:
    for name, value in params:
        if name == b"CONTENT_LENGTH":
            return int(value) if value.isdigit() else None
    return None


def serve(app: WSGIApp, bind: Union[str, Iterable[str], None] = None, threads: int = 8, **options) -> None:
    """Serve `app` over FastCGI in this process until SIGTERM/SIGINT (main thread)
    or `KeyboardInterrupt`."""
    import signal

    server = Server(app, bind=bind, threads=threads, **options)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: server.shutdown(graceful=True))
        signal.signal(signal.SIGINT, lambda *_: server.shutdown(graceful=False))
    server.serve_forever()
