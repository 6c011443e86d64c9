"""One FastCGI request inside the engine: its input, its progress, its end.

A `Request` is created by the loop thread when FCGI_PARAMS are complete and
is then run by exactly one pool thread (or refused by the loop before any
thread saw it).  It is also the transport `wsgi.run_app` writes to:
`send()` and `send_stderr()` go to the connection's write side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import protocol as p
from .body import ClientDisconnected, EmptyBody, RequestBody
from .output import QUEUE_COST

if TYPE_CHECKING:
    from .channel import Channel
    from .connection import RequestStarted

#: More digits than this in CONTENT_LENGTH is more than any disk holds: no int() of it.
_MAX_LENGTH_DIGITS = 19


class RequestBodyTooLarge(ClientDisconnected):
    """The body grew past --max-body-size while the app was reading it."""


class BodyTimeout(ClientDisconnected):
    """The body made no progress for --body-timeout seconds."""


class Request:
    """One FastCGI request: its input, and the connection its response goes to."""

    __slots__ = ("channel", "request_id", "role", "keep_conn", "params", "body", "filter_data", "ended",
                 "aborted", "dispatched", "streaming", "waits_for_body", "bytes_out", "behind_credit", "started",
                 "input_progress", "environ", "status", "method", "uri")

    def __init__(self, channel: Channel, event: RequestStarted, spool_size: int, now: float) -> None:
        self.channel = channel
        self.request_id = event.request_id
        self.role = event.role
        self.keep_conn = event.keep_conn
        self.params = event.params
        # spec 6.3: an authorizer gets no FCGI_STDIN
        self.body: RequestBody | EmptyBody = (EmptyBody() if event.body_empty or event.role == p.AUTHORIZER
                                              else RequestBody(spool_size))
        self.filter_data = RequestBody(spool_size) if event.role == p.FILTER else None
        self.ended = False  # FCGI_END_REQUEST is out (or queued): set under the connection's write lock
        self.aborted = False
        self.dispatched = False  # handed to a pool thread, which runs the end hooks
        self.streaming = False  # runs in a thread while its body is still arriving
        self.waits_for_body = False  # runs once its body is here (Server._runs_after_its_body)
        self.bytes_out = 0
        self.behind_credit = QUEUE_COST  # enough to write one queue behind (Channel._write_chunk_locked)
        self.started = now
        self.input_progress = now  # when input last arrived (--body-timeout)
        self.environ: dict[str, object] | None = None
        self.status: str | None = None
        self.method = self.uri = ""

    def __repr__(self) -> str:
        return "<request %d on %r>" % (self.request_id, self.channel)

    def is_head(self) -> bool:
        """A HEAD request, whose answer is the head alone (RFC 3875 4.3.3),
        known before its environ is built too."""
        if self.method:
            return self.method == "HEAD"
        return ("REQUEST_METHOD", "HEAD") in (self.params or ())

    @property
    def bytes_in(self) -> int:
        return self.body.received

    def input_complete(self) -> bool:
        """All of FCGI_STDIN (and FCGI_DATA) is here: the app cannot wait on the peer."""
        return self.body.complete and (self.filter_data is None or self.filter_data.complete)

    # -- transport for wsgi.run_app (the request's thread) --------------------------

    def send(self, data: bytes, end: bool, head: bytes = b"") -> bool:
        return self.channel.send_response(self, data, end, head)

    def send_stderr(self, data: bytes) -> None:
        self.channel.send_stderr(self, data)

    def truncate(self) -> None:
        """The app failed after its head went out: end so the client sees a cut body."""
        self.channel.truncate(self)

    def finish(self) -> None:
        """Make sure FCGI_END_REQUEST went out (spec 5.4: also after an abort)."""
        if not self.ended:
            self.channel.send_response(self, b"", True)
        self.close_input()

    def close_input(self) -> None:
        self.body.close()
        if self.filter_data is not None:
            self.filter_data.close()

    def abort(self, error: BaseException) -> None:
        """Stop the request: its input raises `error` in the app's thread."""
        self.aborted = True
        self.body.fail(error)
        if self.filter_data is not None:
            self.filter_data.fail(error)


def content_length_of(params: list[tuple[str, str]]) -> int | None:
    """CONTENT_LENGTH as a number; None when absent or not a number.  Never raises:
    5000 digits are not parsed (int() would refuse them), they are just huge;
    latin-1's superscript digits are no digits (str.isdigit() says they are)."""
    for name, value in params:
        if name == "CONTENT_LENGTH":
            if not (value.isascii() and value.isdigit()):
                return None
            if len(value) > _MAX_LENGTH_DIGITS:
                return 1 << 64
            return int(value)
    return None
