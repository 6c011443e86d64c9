"""One connection from the web server: its state, its read side, its requests.

States, changed only in `Channel._set_state` (with the write lock held):

    OPEN       reading and serving requests; idle between them (keep-alive)
    CLOSING    still serving what comes, but closed (or handed to another
               worker) at the first moment it is idle: FCGI_KEEP_CONN clear,
               or the server is stopping; after a protocol error, reading
               nothing more, closed once the requests already whole are answered
    DRAINING   our FIN is sent; reading and dropping the peer's input until it
               closes too (closing with unread input would send a reset)
    LOST       the socket failed (reset, write error, timeout, a protocol
               error with nothing in flight): every live request is aborted;
               the loop closes it
    CLOSED     the socket is closed or belongs to another worker now

Which thread may do what:

* The loop thread owns the read side (`on_readable`, the sans-IO
  `ServerConnection`, `requests`), selector registration, closing the socket,
  and every transition but the two below.
* A request thread touches a connection only through `send_response`,
  `send_stderr` and `truncate`, under `output.lock`.  It may end its own
  request, move CLOSING -> DRAINING (the FIN that follows the last
  END_REQUEST, in the same lock hold, so the web server cannot have started
  a new request on the connection), and move any state to LOST when a write
  fails.  It reports ended requests in `finished`, which the loop drains
  before it reads again, so a request id is free before the web server can
  reuse it.
* Nobody holds `output.lock` across a blocking call.
"""

from __future__ import annotations

import collections
import logging
import selectors
import socket
import time
from typing import TYPE_CHECKING

from . import protocol as p
from .body import ClientDisconnected
from .connection import (
    PACED_READ,
    FilterDataReceived,
    Ignored,
    PacingStarted,
    ParamsTooLarge,
    Reply,
    RequestAborted,
    RequestStarted,
    ServerConnection,
    StdinReceived,
)
from .output import QUEUE_COST, Output

if TYPE_CHECKING:
    from .request import Request
    from .server import Server

log = logging.getLogger("wsgi_fcgi")

OPEN, CLOSING, DRAINING, LOST, CLOSED = "open", "closing", "draining", "lost", "closed"
_TRANSITIONS = {
    OPEN: {CLOSING, DRAINING, LOST, CLOSED},
    CLOSING: {DRAINING, LOST, CLOSED},
    DRAINING: {LOST, CLOSED},
    LOST: {CLOSED},
    CLOSED: set(),
}

#: Response chunks at least this large are framed around the app's buffer
#: (scatter-gather), not copied into records.
_GATHER_SIZE = 32 * 1024
#: The most credit a request saves for writing behind (Channel._write_chunk_locked): an app that
#: stops yielding in bursts spends it within a few queues.
_BEHIND_CREDIT_MAX = 64
#: The answer to an HTTP request sent here, before the connection closes.
_NOT_FASTCGI_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 55\r\n"
                       b"Connection: close\r\n\r\nThis address serves FastCGI to a web server, not HTTP.\n")
#: How long a closing connection may take to send us its unread input.
DRAIN_TIMEOUT = 5.0
#: How long a stopping server waits for the first request of a connection it
#: accepted: a web server opens a connection to send a request at once.
FIRST_REQUEST_GRACE = 2.0


class Channel:
    """The engine's side of one connection."""

    def __init__(self, server: Server, sock: socket.socket, peer) -> None:
        self.server = server
        self.sock = sock
        self.fileno = sock.fileno()
        self.peer = peer
        settings = server.settings
        self.conn = ServerConnection(values=server.get_values, max_requests=settings["max_requests_per_connection"],
                                     max_params_size=settings["max_params_size"])
        self.output = Output(sock, settings["output_buffer_size"], self._on_backlog)
        self.state = OPEN
        self.state_since = self.opened = self.idle_since = time.monotonic()
        self.requests: dict[int, Request] = {}  # live requests by id (loop thread)
        self.finished: collections.deque = collections.deque()  # ended by threads, not yet reaped
        self.deferred: collections.deque = collections.deque()  # started, waiting for this connection's turn
        # Requests not yet ended = started - ended: each count has one writer,
        # so registering a request takes no lock (a thread ending one reads
        # `requests_started` under output.lock, before or after it grew).
        self.requests_started = 0  # (loop thread)
        self.requests_ended = 0  # (under output.lock)
        self.running = 0  # requests in pool threads (under the server's count lock)
        self.record_started: float | None = None  # when the partial record began
        self.had_request = False
        self.peer_closed = False  # the peer's FIN arrived: nothing more to read
        self.handoff = False  # when CLOSING and idle: pass the socket on rather than close it
        self.reusable = True  # no request asked to close it (FCGI_KEEP_CONN clear): it may be handed on
        self.close_reason = ""

    def __repr__(self) -> str:
        return "<connection from %s>" % ("%s:%d" % self.peer[:2] if self.peer else "unix socket")

    # -- state ----------------------------------------------------------------------

    def _set_state(self, state: str, reason: str = "") -> None:
        """The one place where the state changes (caller holds output.lock)."""
        if state is self.state or state not in _TRANSITIONS[self.state]:
            return
        self.state = state
        self.state_since = time.monotonic()
        if reason:
            self.close_reason = reason
        if state is LOST:
            self.server.loop.notify(self)

    def set_state(self, state: str, reason: str = "") -> None:
        with self.output.lock:
            self._set_state(state, reason)

    @property
    def live(self) -> int:
        return self.requests_started - self.requests_ended

    def idle(self) -> bool:
        """Nothing in flight: no live request, no partial record, no queued output."""
        return (not self.live and not self.requests and not self.output.pending
                and (self.peer_closed or not self.conn.mid_record))

    def awaiting_first_request(self, now: float) -> bool:
        """Closing this idle connection now would fail the request on its way."""
        return not self.had_request and now - self.opened < FIRST_REQUEST_GRACE

    # -- loop thread: readiness ---------------------------------------------------------

    def on_event(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self.on_writable()
        if mask & selectors.EVENT_READ and self.state is not CLOSED and self.state is not LOST:
            self.on_readable()

    def on_writable(self) -> None:
        """Send what the kernel takes of the queue; watch for writability while some is left."""
        drained = self.output.flush()
        if self.output.failed is not None:
            self.lose(self.output.failed)
            return
        self.server.loop.update_interest(self)
        if drained:
            if self.state is CLOSING:
                self.finish_closing(time.monotonic())
            elif self.state is DRAINING and self.peer_closed:
                self.close()
                return
        if self.deferred and not self.output.backlogged:
            self.server.run_deferred(self)

    # -- reading (loop thread) ----------------------------------------------------------

    def on_readable(self, _mask: int = 1) -> None:
        self.reap_finished()
        if self.state is CLOSING and self.handoff:
            # A stopping worker passes a kept connection on at its first idle
            # moment, the request waiting in it unread: under load the next
            # one is always there before the loop looks again.
            self.finish_closing(time.monotonic(), request_waiting=True)
            if self.state is CLOSED:
                return
        try:
            view = self.server.loop.recv_view
            size = self.sock.recv_into(view, PACED_READ if self.conn.paced else 0)  # 0: the whole buffer
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.lose("read failed: %s" % (exc.strerror or exc))
            return
        if not size:
            self.on_peer_closed()
            return
        if self.state is not OPEN and self._drops_input():
            return
        try:
            events = self.conn.receive_data(view[:size])
        except p.ProtocolError as exc:
            self._on_protocol_error(exc)
            return
        # --read-timeout counts from the first byte of a record, so a peer
        # trickling a byte at a time (slowloris) cannot hold it open forever.
        if not self.conn.mid_record:
            self.record_started = None
        elif self.record_started is None:
            self.record_started = time.monotonic()
        for event in events:
            if self.state is LOST or self.state is CLOSED:
                break  # dropped while handling an earlier record
            self._handle(event)
        if self.conn.error is not None:  # after the events of the records before it
            self._on_protocol_error(self.conn.error)
        self.server.schedule_admitted()

    def _on_protocol_error(self, exc: p.ProtocolError) -> None:
        """Invalid input: nothing more can be read (records have no
        resynchronisation marker).  The requests whose input was complete
        before it are still answered, then the connection closes; an HTTP
        client that came here straight gets a 400 that says why."""
        if self.state is LOST or self.state is CLOSED:
            return
        if isinstance(exc, p.ForeignProtocol) and exc.protocol == "HTTP" and not self.had_request:
            log.warning("%r: protocol error, closing the connection: %s", self, exc)
            self._answer_and_drain(_NOT_FASTCGI_ANSWER, "an HTTP request")
            return
        self.record_started = None
        if self.idle():  # the failed parser holds no partial record
            log.warning("%r: protocol error, closing the connection: %s", self, exc)
            self.lose("protocol error")
            return
        log.warning("%r: protocol error, closing the connection once the requests whose input came whole "
                    "are answered: %s", self, exc)
        self._refuse_incomplete("protocol error on the connection")
        self.close_after_requests("protocol error")
        self.finish_closing(time.monotonic())

    def _answer_and_drain(self, data: bytes, reason: str) -> None:
        """Send `data`, FIN, then drop the peer's input until it closes: a
        peer still sending reads the answer rather than a reset."""
        with self.output.lock:
            if self.output.write_locked(data):
                self.output.shutdown_locked()
                self._set_state(DRAINING, reason)
            else:
                self._set_state(LOST, self.output.failed or "write failed")
        self.server.loop.update_interest(self)

    def _refuse_incomplete(self, why: str) -> None:
        """No more input comes: a request still waiting for some can never
        complete and gets a 400; the others are answered as usual."""
        for request in list(self.requests.values()):
            if not request.input_complete():
                self.server.refuse(request, "400 Bad Request", ClientDisconnected(why))
        self.reap_finished()

    def _drops_input(self) -> bool:
        """The rest of a connection we are closing, or input after a protocol error."""
        return self.state is DRAINING or (self.state is CLOSING and self.conn.error is not None)

    def _handle(self, event) -> None:
        kind = type(event)
        server = self.server
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
                server.feed_filter_data(request, event.data)
        elif kind is RequestAborted:
            request = self.requests.get(event.request_id)
            if request is not None:
                log.debug("%r: request %d aborted by the web server", self, event.request_id)
                server.abort_request(request, ClientDisconnected("request aborted by the web server"))
        elif kind is ParamsTooLarge:
            server.refuse_params(self, event)
        elif kind is Ignored:
            log.debug("%r: ignored %r: %s", self, event.record, event.reason)
        elif kind is PacingStarted:
            log.warning("%r: a flood of tiny records (%d in a read of %d bytes): read %d bytes at a time "
                        "while it lasts", self, event.records, event.size, PACED_READ)

    def on_peer_closed(self) -> None:
        """The peer's FIN: requests whose input is complete still get their
        responses (a client may shut down its write side after STDIN); the
        others can never complete."""
        self.peer_closed = True
        self.record_started = None  # a partial record can never complete now
        self.server.loop.update_interest(self)  # no more reading
        if self.state is not DRAINING:
            self._refuse_incomplete("connection closed by the web server")
        if self.state is DRAINING or self.idle():
            self.close()
            return
        self.set_state(CLOSING, "closed by the peer")

    def reap_finished(self) -> None:
        """Free the ids of requests the threads ended (spec 3.3: an id is live
        from BEGIN_REQUEST to END_REQUEST)."""
        finished = self.finished
        while finished:
            request = finished.popleft()
            if self.requests.get(request.request_id) is request:
                del self.requests[request.request_id]
                self.conn.finish_request(request.request_id)
                if not self.requests:
                    self.idle_since = time.monotonic()

    # -- writing (any thread) -----------------------------------------------------------

    def send_response(self, request: Request, data, end: bool, head: bytes = b"") -> bool:
        """FCGI_STDOUT for `request` (`head` first), then with `end` the empty
        STDOUT and END_REQUEST.  False once the request or connection is gone."""
        size = len(head) + len(data)
        out = _frame_stdout(request.request_id, head, data, size, end)
        output = self.output
        with output.lock:
            if request.ended or (request.aborted and not end):
                return False
            if end:
                self._end_locked(request)
                written = output.write_locked(out)
                if output.pending and written:  # chunks written behind in front of it: out now
                    written = output.flush_locked()
            else:
                written = self._write_chunk_locked(request, out)
            if not written:
                self._set_state(LOST, output.failed or "write failed")
                return False
            request.bytes_out += size
            if end:
                if self.state is CLOSING or self.deferred:
                    self._after_end_locked()
            elif output.backlogged:
                return output.wait_locked() and not request.aborted
        return True

    def _write_chunk_locked(self, request: Request, out) -> bool:
        """A streamed chunk, written behind while that pays: queued for the
        loop thread, which sends the chunks queued by then in one write.  Sent
        one by one, each small chunk is a system call here and a TCP segment
        and a read in the web server.  PEP 3333 ("Buffering and Streaming")
        allows it: the server must "guarantee that [it] will continue
        transmission even while the application is producing its next block".

        It pays when the app yields chunks faster than the loop thread flushes
        them: they join a queue.  An app that waits between chunks (releasing
        the GIL) lets the loop thread flush them one or two at a time, each
        flush costing more than a send: a request earns credit for each chunk
        that joined a queue and pays QUEUE_COST for each queue it starts, and
        sends its chunks at once while it cannot pay."""
        output = self.output
        if output.pending:
            if request.behind_credit < _BEHIND_CREDIT_MAX:
                request.behind_credit += 1
            return output.write_locked(out)  # joins the queue
        if request.behind_credit >= QUEUE_COST and type(out) is bytes:
            request.behind_credit -= QUEUE_COST
            return output.write_behind_locked(out)
        return output.write_locked(out)

    def send_stderr(self, request: Request, data: bytes) -> None:
        out = p.encode_stream(p.STDERR, request.request_id, data)
        with self.output.lock:
            if not request.ended and not self.output.write_locked(out):
                self._set_state(LOST, self.output.failed or "write failed")

    def end_from_loop(self, request: Request, status: str, text: str) -> None:
        """End `request` from the loop (limits, timeouts): the response is
        `status` with `text`, unless the app's head is out already."""
        from .wsgi import head_of, simple_response
        rid = request.request_id
        with self.output.lock:
            if request.ended:
                return
            out = b""
            if request.bytes_out == 0:
                response = simple_response(status, text)
                if request.is_head():
                    response = head_of(response)
                request.status = status
                request.bytes_out = len(response)
                out = p.encode_stream(p.STDOUT, rid, response)
            self._end_locked(request)
            if not self.output.write_locked(out + p.encode_stdout_end(rid)):
                self._set_state(LOST, self.output.failed or "write failed")
                return
            self._after_end_locked()

    def truncate(self, request: Request) -> None:
        """The app failed after its head went out.  No END_REQUEST: the
        connection is shut once the body sent so far is out, so the web server
        sees the response cut (nginx closes the client connection without the
        final chunk) instead of a well-formed short body."""
        with self.output.lock:
            if request.ended:
                return
            self._end_locked(request)
            self.output.shutdown_locked()
            self._set_state(DRAINING, "response truncated")

    def send_from_loop(self, data: bytes) -> None:
        """Answers the loop gives by itself (management records, refusals),
        written behind: the answers to one read's records go out in one write
        at the loop's next round, not one system call each.  A peer that does
        not read them is dropped past the output limit."""
        output = self.output
        with output.lock:
            if not output.write_behind_locked(data):
                self._set_state(LOST, output.failed or "write failed")
                return
            if output.held > 4 * output.limit:
                log.warning("%r: %d bytes of answers queued that the peer does not read, closing the connection",
                            self, output.held)
                output.fail_locked("peer does not read its answers")
                self._set_state(LOST, "peer does not read")

    def _end_locked(self, request: Request) -> None:
        request.ended = True
        self.requests_ended += 1
        self.finished.append(request)
        self.server.count_end()

    def _after_end_locked(self) -> None:
        if self.live or self.state is not CLOSING:
            if self.deferred:
                self.server.loop.notify(self)
            return
        if self.handoff:
            self.server.loop.notify(self)  # handed over by the loop once idle
        else:
            self.output.shutdown_locked()  # FIN with the last END_REQUEST
            self._set_state(DRAINING)

    def _on_backlog(self) -> None:
        self.server.loop.want_write(self)

    # -- closing (loop thread) ------------------------------------------------------------

    def close_when_idle(self, reason: str, handoff: bool = False) -> None:
        """Close (or hand over) at the first moment nothing is in flight."""
        with self.output.lock:
            self.handoff = handoff and self.reusable
            self._set_state(CLOSING, reason)
        self.server.loop.notify(self)

    def close_after_requests(self, reason: str) -> None:
        """Close once the live requests are answered, and never hand it on:
        the web server waits for our close (FCGI_KEEP_CONN clear)."""
        with self.output.lock:
            self.reusable = self.handoff = False
            self._set_state(CLOSING, reason)

    def finish_closing(self, now: float, request_waiting: bool = False) -> None:
        """A CLOSING connection that is idle: hand it over, or FIN and drain.
        With `request_waiting` (the socket is readable) only hand it over: a
        request already in the buffer is better served than cut by a FIN."""
        self.reap_finished()
        if self.state is not CLOSING or not self.idle() or self.awaiting_first_request(now):
            return
        loop = self.server.loop
        if self.peer_closed:
            self.close()
        elif self.handoff and loop.hand_over(self):
            self.close(handed_over=True)
        elif not request_waiting and not loop.awaits_handoff(self):
            with self.output.lock:
                self.output.shutdown_locked()
                self._set_state(DRAINING)

    def lose(self, reason: str) -> None:
        """The connection is unusable: abort its requests, close it."""
        with self.output.lock:
            self.output.fail_locked(reason)
            self._set_state(LOST, reason)
        self.close()

    def close(self, handed_over: bool = False) -> None:
        """Close the socket (loop thread).  Threads still running requests of
        this connection find the output failed and give up."""
        if self.state is CLOSED:
            return
        if self.requests or self.deferred:
            error = ClientDisconnected(self.close_reason or "connection closed")
            for request in list(self.requests.values()):
                request.abort(error)
            self.server.drop_deferred(self)
        self.server.loop.unregister(self)
        with self.output.lock:
            if self.output.failed is None:
                self.output.fail_locked(self.close_reason or "closed")
            self._set_state(CLOSED)
            try:
                self.sock.close()
            except OSError:
                pass
        if not handed_over and self.close_reason:
            log.debug("%r: closed (%s)", self, self.close_reason)


def _frame_stdout(request_id: int, head: bytes, data, size: int, end: bool):
    """FCGI_STDOUT records for head + data, and with `end` the closing records.
    Large data is framed as a list of buffers around it (no copy)."""
    tail = p.encode_stdout_end(request_id) if end else b""
    if size < _GATHER_SIZE:  # one record (spec 3.3: up to 65535 bytes of content)
        body = head + data if head else data
        return (p.encode_record(p.STDOUT, request_id, body) if body else b"") + tail
    parts = p.stream_parts(p.STDOUT, request_id, head) if head else []
    parts += p.stream_parts(p.STDOUT, request_id, data)
    if tail:
        parts.append(tail)
    return parts
