"""The server side of one FastCGI connection as a state machine, sans-IO.

`ServerConnection.receive_data()` takes bytes from the web server and returns
events: a request whose FCGI_PARAMS are complete, its FCGI_STDIN / FCGI_DATA
chunks, aborts, and `Reply` bytes that the connection itself answers
(FCGI_GET_VALUES_RESULT, FCGI_UNKNOWN_TYPE, and the FCGI_END_REQUEST of a
request refused before it started).  The I/O layer runs the requests and calls
`finish_request()` once it has sent a request's FCGI_END_REQUEST, which frees
the request id for reuse (spec 3.3: ids are live from BEGIN to END).
"""

from __future__ import annotations

from typing import NamedTuple

from . import protocol as p
from .memory import PIECE_COST


class RequestStarted(NamedTuple):
    """FCGI_BEGIN_REQUEST and the complete FCGI_PARAMS stream have arrived.
    `body_empty`: FCGI_STDIN ended, empty, in the same data with no event
    between (a GET); no StdinReceived comes for this request then."""
    request_id: int
    role: int
    keep_conn: bool
    params: list[tuple[str, str]]  # in the order sent, latin-1 (protocol.decode_params)
    body_empty: bool = False


class StdinReceived(NamedTuple):
    """A chunk of FCGI_STDIN; `data == b""` is the end of the stream."""
    request_id: int
    data: bytes


class FilterDataReceived(NamedTuple):
    """A chunk of FCGI_DATA (FILTER role); `data == b""` is the end of the stream."""
    request_id: int
    data: bytes


class RequestAborted(NamedTuple):
    """FCGI_ABORT_REQUEST for a request that is running (spec 5.4)."""
    request_id: int


class ParamsTooLarge(NamedTuple):
    """The FCGI_PARAMS of a request grew past `max_params_size`."""
    request_id: int
    size: int


class Reply(NamedTuple):
    """Bytes the connection answers by itself; send them as they are."""
    data: bytes


class PacingStarted(NamedTuple):
    """The peer sends a flood of tiny records (`records` in `size` bytes):
    from now on it is read PACED_READ bytes at a time (ServerConnection.paced)."""
    records: int
    size: int


class Ignored(NamedTuple):
    """A record the spec lets us drop (inactive request id, server-only type)."""
    record: p.Record
    reason: str


Event = (RequestStarted | StdinReceived | FilterDataReceived | RequestAborted | ParamsTooLarge | Reply
         | Ignored | PacingStarted)

#: What a peer sending tiny records is read in (ServerConnection.paced): a
#: read buffer's worth of 8-byte records is tens of thousands, each with its
#: cost, which the other connections would wait for.
PACED_READ = 4096
#: Tiny records: more than this many in one read, of this average size or less.
_MANY_RECORDS = 64
_TINY_RECORD = 64
#: Paced until this many bytes came in records of ordinary size.
_PACED_UNTIL = 256 * 1024

# Per-request input states.
_PARAMS, _STDIN, _DATA, _INPUT_DONE, _REFUSED = range(5)


class _RequestState:
    __slots__ = ("role", "keep_conn", "state", "params", "params_size")

    def __init__(self, role: int, keep_conn: bool) -> None:
        self.role = role
        self.keep_conn = keep_conn
        self.state = _PARAMS
        self.params: list[bytes] = []
        self.params_size = 0


class ServerConnection:
    """Protocol state of one transport connection, seen from the application.

    `values` answers FCGI_GET_VALUES; `max_requests` bounds the live request
    ids of this connection (more get FCGI_END_REQUEST with FCGI_OVERLOADED);
    `max_params_size` bounds the FCGI_PARAMS bytes buffered for one request
    (a record counting at least 64 bytes, a decoded pair 64 more),
    and for all the not yet started requests of the connection together (a
    web server sends one request's params at a time; a peer opening many ids
    with huge unfinished params must not multiply the limit).
    """

    def __init__(self, *, values: dict[bytes, bytes] | None = None,
                 max_requests: int = 100, max_params_size: int = 1 << 20) -> None:
        self._parser = p.RecordParser()
        self._requests: dict[int, _RequestState] = {}
        self.values = values if values is not None else {p.MPXS_CONNS: b"1"}
        self.max_requests = max_requests
        self.max_params_size = max_params_size
        self._params_buffered = 0  # FCGI_PARAMS bytes held for requests not started
        self.error: p.ProtocolError | None = None  # the input was invalid from there on
        self.paced = False  # read PACED_READ bytes at a time: the peer sends tiny records
        self._ordinary_bytes = 0  # since the last read of tiny records

    @property
    def live_requests(self) -> int:
        return len(self._requests)

    @property
    def mid_record(self) -> bool:
        """A record has begun arriving and not ended."""
        return self._parser.mid_record

    def is_live(self, request_id: int) -> bool:
        return request_id in self._requests

    def finish_request(self, request_id: int) -> None:
        """The request's FCGI_END_REQUEST is sent (or about to be): its id is free."""
        request = self._requests.pop(request_id, None)
        if request is not None:
            self._release_params(request)

    def _release_params(self, request: _RequestState) -> None:
        if request.state == _PARAMS:
            self._params_buffered -= request.params_size
        request.params = []

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """`data` may be a view of a buffer the caller reuses: nothing keeps it.

        Invalid input raises ProtocolError, kept in `error`; nothing more may be
        fed.  When events came before it in `data`, they are returned instead,
        and the caller handles `error` after them: a request whose input was
        complete before a peer's bad record can still be answered."""
        events: list[Event] = []
        parser = self._parser
        try:
            for record in parser.feed(data):
                if record.request_id == p.NULL_REQUEST_ID:
                    events.append(self._management(record))
                else:
                    self._application(record, events)
            if parser.records_in_last_feed > _MANY_RECORDS or self.paced:
                self._pace(len(data), parser.records_in_last_feed, events)
            if parser.error is not None:  # after the whole records before it
                raise parser.error
        except p.ProtocolError as exc:
            parser.fail(exc)  # raised by every later feed, no partial record held
            self.error = exc
            if not events:
                raise
        return events

    def _pace(self, size: int, records: int, events: list[Event]) -> None:
        """A web server sends a few records per read, of hundreds of bytes
        and more.  A flood of tiny ones (management records that each take
        an answer, a body in 1-byte records) costs per record: the peer is
        read PACED_READ bytes at a time while it sends them, and until
        _PACED_UNTIL bytes come in ordinary records (so that alternating a
        little ordinary input with a buffer of tiny records does not pay)."""
        if records > _MANY_RECORDS and records * _TINY_RECORD >= size:
            if not self.paced:
                events.append(PacingStarted(records, size))
            self.paced = True
            self._ordinary_bytes = 0
        elif self.paced:
            self._ordinary_bytes += size
            self.paced = self._ordinary_bytes < _PACED_UNTIL

    # -- management records (spec 4) --------------------------------------

    def _management(self, record: p.Record) -> Event:
        if record.type == p.GET_VALUES:
            asked = p.decode_pairs(record.content)
            # Spec 4.1: answer only the names we know, omit the others.
            answer = [(name, self.values[name]) for name, _ in asked if name in self.values]
            return Reply(p.encode_get_values_result(answer))
        return Reply(p.encode_unknown_type(record.type))

    # -- application records (spec 5) -------------------------------------

    def _application(self, record: p.Record, events: list[Event]) -> None:
        rtype = record.type
        request_id = record.request_id
        request = self._requests.get(request_id)
        if rtype == p.BEGIN_REQUEST:
            self._begin(request_id, request, record.content, events)
        elif request is None:
            events.append(Ignored(record, "request id %d is not active" % request_id))
        elif rtype == p.PARAMS:
            self._params(request_id, request, record.content, events)
        elif rtype == p.STDIN:
            self._stdin(request_id, request, record.content, events)
        elif rtype == p.DATA:
            self._data(request_id, request, record.content, events)
        elif rtype == p.ABORT_REQUEST:
            self._abort(request_id, request, events)
        else:
            events.append(Ignored(record, "a web server does not send %s"
                                  % p.RECORD_TYPE_NAMES.get(rtype, "record type %d" % rtype)))

    def _begin(self, request_id: int, request: _RequestState | None,
               content: bytes, events: list[Event]) -> None:
        if request is not None:
            raise p.ProtocolError("FCGI_BEGIN_REQUEST for request id %d, which is still active"
                                  % request_id)
        begin = p.decode_begin_request(content)
        if begin.role not in p.ROLE_NAMES:
            events.append(Reply(p.encode_end_request(request_id, 0, p.UNKNOWN_ROLE)))
        elif len(self._requests) >= self.max_requests:
            events.append(Reply(p.encode_end_request(request_id, 0, p.OVERLOADED)))
        else:
            self._requests[request_id] = _RequestState(begin.role, begin.keep_conn)

    def _params(self, request_id: int, request: _RequestState, content: bytes,
                events: list[Event]) -> None:
        if request.state == _REFUSED:
            return
        if request.state != _PARAMS:
            raise p.ProtocolError("FCGI_PARAMS for request id %d after its params ended"
                                  % request_id)
        if content:
            # A record counts as at least PIECE_COST: params cut into 2-byte records held
            # 25 times --max-params-size.
            cost = len(content)
            if cost < PIECE_COST:
                cost = PIECE_COST
            request.params_size += cost
            self._params_buffered += cost
            if self._params_buffered > self.max_params_size:  # >= this request's own size
                self._release_params(request)
                request.state = _REFUSED
                events.append(ParamsTooLarge(request_id, request.params_size))
            else:
                request.params.append(content)
            return
        params = p.decode_params(b"".join(request.params))
        self._release_params(request)
        # Each pair decoded counts PIECE_COST (its strings may add 0-100 bytes): 1 MiB of empty
        # pairs held 36 MiB while the request waited.  Not more: 4K (uWSGI's buffer-size
        # carried over) must still take 60 headers.
        if len(params) * PIECE_COST > self.max_params_size:
            request.state = _REFUSED
            events.append(ParamsTooLarge(request_id, len(params) * PIECE_COST))
            return
        request.state = _STDIN if request.role != p.AUTHORIZER else _INPUT_DONE
        events.append(tuple.__new__(RequestStarted, (request_id, request.role, request.keep_conn, params, False)))

    def _stdin(self, request_id: int, request: _RequestState, content: bytes,
               events: list[Event]) -> None:
        if request.state == _STDIN:
            if not content:
                request.state = _DATA if request.role == p.FILTER else _INPUT_DONE
                started = events[-1] if events else None
                if type(started) is RequestStarted and started.request_id == request_id:
                    events[-1] = tuple.__new__(RequestStarted, (request_id, started.role, started.keep_conn,
                                                                started.params, True))
                    return
            events.append(tuple.__new__(StdinReceived, (request_id, content)))  # as protocol.Record
        elif request.state == _PARAMS:
            raise p.ProtocolError("FCGI_STDIN for request id %d before its params ended"
                                  % request_id)
        elif request.role == p.AUTHORIZER and request.state == _INPUT_DONE and not content:
            pass  # an authorizer gets no body (spec 6.3), some servers close STDIN anyway
        elif request.state != _REFUSED:
            raise p.ProtocolError("FCGI_STDIN for request id %d after its end" % request_id)

    def _data(self, request_id: int, request: _RequestState, content: bytes,
              events: list[Event]) -> None:
        if request.role != p.FILTER or request.state != _DATA:
            if request.state == _REFUSED:
                return
            raise p.ProtocolError("unexpected FCGI_DATA for request id %d" % request_id)
        events.append(FilterDataReceived(request_id, content))
        if not content:
            request.state = _INPUT_DONE

    def _abort(self, request_id: int, request: _RequestState, events: list[Event]) -> None:
        if request.state in (_PARAMS, _REFUSED):
            # Not started yet: nothing to stop, end it here (spec 5.4).
            self._release_params(self._requests.pop(request_id))
            events.append(Reply(p.encode_end_request(request_id)))
        else:
            events.append(RequestAborted(request_id))
