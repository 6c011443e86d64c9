"""FastCGI 1.0 wire format, sans-IO: records, name-value pairs, encoders.

Nothing here touches a socket.  `RecordParser` is fed arbitrary byte chunks
and returns whole records; the `encode_*` functions build the bytes of every
record a server (or a client) sends.  Section numbers refer to the FastCGI
specification 1.0 (Open Market, 1996).
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterable
from typing import NamedTuple

VERSION_1 = 1
HEADER_LEN = 8
#: contentLength is a 16-bit field (spec 3.3).
MAX_CONTENT_LEN = 0xFFFF
#: Management records use request id 0 (spec 3.3).
NULL_REQUEST_ID = 0

# Record types (spec 8).
BEGIN_REQUEST = 1
ABORT_REQUEST = 2
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
STDERR = 7
DATA = 8
GET_VALUES = 9
GET_VALUES_RESULT = 10
UNKNOWN_TYPE = 11

RECORD_TYPE_NAMES = {
    BEGIN_REQUEST: "FCGI_BEGIN_REQUEST",
    ABORT_REQUEST: "FCGI_ABORT_REQUEST",
    END_REQUEST: "FCGI_END_REQUEST",
    PARAMS: "FCGI_PARAMS",
    STDIN: "FCGI_STDIN",
    STDOUT: "FCGI_STDOUT",
    STDERR: "FCGI_STDERR",
    DATA: "FCGI_DATA",
    GET_VALUES: "FCGI_GET_VALUES",
    GET_VALUES_RESULT: "FCGI_GET_VALUES_RESULT",
    UNKNOWN_TYPE: "FCGI_UNKNOWN_TYPE",
}

# Roles (spec 5.1, 6).
RESPONDER = 1
AUTHORIZER = 2
FILTER = 3
ROLE_NAMES = {RESPONDER: "RESPONDER", AUTHORIZER: "AUTHORIZER", FILTER: "FILTER"}

#: flags bit of FCGI_BeginRequestBody (spec 5.1).
KEEP_CONN = 1

# protocolStatus of FCGI_EndRequestBody (spec 5.5).
REQUEST_COMPLETE = 0
CANT_MPX_CONN = 1
OVERLOADED = 2
UNKNOWN_ROLE = 3

# Variables of FCGI_GET_VALUES (spec 4.1).
MAX_CONNS = b"FCGI_MAX_CONNS"
MAX_REQS = b"FCGI_MAX_REQS"
MPXS_CONNS = b"FCGI_MPXS_CONNS"

#: what the parser and the encoders take: bytes, or a buffer of bytes the caller
#: may reuse (the compiled core checks these types; anything else is a TypeError)
BytesLike = bytes | bytearray | memoryview

_HEADER = struct.Struct("!BBHHBx")
_BEGIN_BODY = struct.Struct("!HB5x")
_END_BODY = struct.Struct("!LB3x")
_UNKNOWN_TYPE_BODY = struct.Struct("!B7x")
_LEN4 = struct.Struct("!L")
_PADDING = [b"\0" * n for n in range(8)]


class ProtocolError(Exception):
    """The peer sent bytes that are not valid FastCGI 1.0."""


class ForeignProtocol(ProtocolError):
    """The peer speaks another protocol: a web server configured for it (or an
    HTTP client sent straight here).  `protocol`: "HTTP", "TLS", "SCGI", "uwsgi"."""

    def __init__(self, message: str, protocol: str) -> None:
        super().__init__(message)
        self.protocol = protocol


# What the first bytes of another protocol look like where a FastCGI header
# was expected (its version byte is 1), with what to change: the mistakes of
# a web server pointed here (nginx's proxy_pass, uwsgi_pass, scgi_pass).
_FOREIGN_PROTOCOLS = (
    ("HTTP", re.compile(rb"(?:GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|CONNECT|TRACE|PRI) "),
     "an HTTP request: this address takes FastCGI from a web server (nginx: fastcgi_pass, not proxy_pass); "
     "HTTP clients go to the web server"),
    ("TLS", re.compile(rb"\x16\x03[\x00-\x04]"),
     "a TLS handshake: this address takes plain FastCGI from a web server, not https"),
    ("SCGI", re.compile(rb"[1-9][0-9]{0,6}:C"),  # a netstring, CONTENT_LENGTH first
     "an SCGI request: this address takes FastCGI (nginx: fastcgi_pass, not scgi_pass)"),
    ("uwsgi", re.compile(rb"\x00(?!\x00\x00)..\x00", re.S),  # modifier1 0, a 16-bit size, modifier2 0
     "a uwsgi packet: this address takes FastCGI (nginx: fastcgi_pass, not uwsgi_pass)"),
)


def _bad_header(data: BytesLike, offset: int, version: int) -> ProtocolError:
    head = bytes(data[offset:offset + HEADER_LEN])
    for name, pattern, explanation in _FOREIGN_PROTOCOLS:
        if pattern.match(head):
            return ForeignProtocol("not FastCGI but %s (first bytes %r)" % (explanation, head), name)
    return ProtocolError("unsupported FastCGI version %d (record header %r)" % (version, head))


# The hot paths build their NamedTuples with tuple.__new__: a NamedTuple's own
# __new__ is a Python function (namedtuple compiles it from a string), one
# interpreted call per record even in the compiled core.  Same object.

class Record(NamedTuple):
    type: int
    request_id: int
    content: bytes

    def __repr__(self) -> str:
        name = RECORD_TYPE_NAMES.get(self.type, "type %d" % self.type)
        return "Record(%s, id=%d, %d bytes)" % (name, self.request_id, len(self.content))


class BeginRequest(NamedTuple):
    role: int
    flags: int

    @property
    def keep_conn(self) -> bool:
        return bool(self.flags & KEEP_CONN)


class EndRequest(NamedTuple):
    app_status: int
    protocol_status: int


class RecordParser:
    """Incremental record parser: `feed()` any chunk, get the whole records.

    A record may arrive split at any byte.  `feed()` may be given a view of a
    buffer the caller reuses for its next read, so the parser copies what it
    keeps: each record's content once, straight out of the chunk, and of a
    record split across chunks only its content pieces, joined once complete
    (a 64 KiB FCGI_STDIN record is copied once, or twice when split).
    Consecutive non-empty FCGI_STDIN records of one request that are whole
    in one chunk come out as one record, their contents joined in that one
    copy.  The first invalid header raises ProtocolError, and the stream
    cannot be resumed (records have no resynchronisation marker); when whole
    records came before it in the same chunk, `feed()` returns them and the
    next `feed()` raises the error, kept in `error` (as h11 does).
    """

    __slots__ = ("_head", "_type", "_request_id", "_parts", "_content_left", "_padding_left", "error",
                 "records_in_last_feed")

    def __init__(self) -> None:
        self.error: ProtocolError | None = None
        self.records_in_last_feed = 0  # whole records the last feed() completed, joined ones each counted
        self._head = b""  # the start of a header split across chunks
        # The record whose content is split across chunks (_type -1: none).
        self._type = -1
        self._request_id = 0
        self._parts: list[bytes] = []
        self._content_left = 0
        self._padding_left = 0

    @property
    def mid_record(self) -> bool:
        """A record has begun and not ended."""
        return bool(self._head) or self._type != -1

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a record split across chunks."""
        return len(self._head) + sum(map(len, self._parts))

    def fail(self, error: ProtocolError) -> None:
        """End the stream at `error`, found in records this parser returned:
        every later `feed()` raises it, and no partial record is held."""
        self.error = error
        self._head = b""
        self._type = -1
        self._parts = []

    def feed(self, data: BytesLike) -> list[Record]:
        if self.error is not None:
            raise self.error
        records: list[Record] = []
        joined = 0  # records joined into others
        offset = self._resume(data, records) if self._head or self._type != -1 else 0
        size = len(data)
        unpack = _HEADER.unpack_from
        while size - offset >= HEADER_LEN:
            version, rtype, request_id, content_len, padding_len = unpack(data, offset)
            if version != VERSION_1:
                error = _bad_header(data, offset, version)
                if not records:
                    raise error
                self.error = error
                break
            start = offset + HEADER_LEN
            end = start + content_len
            if end + padding_len > size:
                self._type = rtype
                self._request_id = request_id
                self._content_left = content_len
                self._padding_left = padding_len
                self._resume_at(data, start, records)
                break
            offset = end + padding_len
            if rtype == STDIN and content_len:
                content, offset, more = _join_stdin_run(data, request_id, data[start:end], offset)
                joined += more
            else:
                content = bytes(data[start:end]) if content_len else b""
            records.append(tuple.__new__(Record, (rtype, request_id, content)))
        else:
            if offset < size:
                self._head = bytes(data[offset:])
        self.records_in_last_feed = len(records) + joined
        return records

    def _resume(self, data: BytesLike, records: list[Record]) -> int:
        """Continue the split header or record with `data`; the offset of
        what follows it in `data` (len(data) when it is not complete yet)."""
        offset = 0
        if self._head:
            offset = HEADER_LEN - len(self._head)
            head = self._head + bytes(data[:offset])
            self._head = b""
            records += self.feed(head)  # keeps a still partial header, or starts the record
            if self._head:
                return len(data)
            if self._type == -1:  # no content, no padding: already whole
                return offset
        return self._resume_at(data, offset, records)

    def _resume_at(self, data: BytesLike, offset: int, records: list[Record]) -> int:
        size = len(data)
        take = min(self._content_left, size - offset)
        if take:
            self._parts.append(bytes(data[offset:offset + take]))
            self._content_left -= take
            offset += take
        skip = min(self._padding_left, size - offset)
        self._padding_left -= skip
        offset += skip
        if self._content_left or self._padding_left:
            return size
        parts = self._parts
        content = parts[0] if len(parts) == 1 else b"".join(parts)
        records.append(tuple.__new__(Record, (self._type, self._request_id, content)))
        self._type = -1
        self._parts = []
        return offset


def _join_stdin_run(data: BytesLike, request_id: int, first: BytesLike,
                    offset: int) -> tuple[bytes, int, int]:
    """The content of an FCGI_STDIN record joined with that of the complete,
    non-empty FCGI_STDIN records of the same request right after it in
    `data`, in one copy, the offset past them and how many were joined.  Web
    servers cut a body into records of at most 32 KiB (nginx) or 64 KiB:
    the app's 64 KiB read then takes one chunk instead of joining two."""
    pieces = None
    size = len(data)
    unpack = _HEADER.unpack_from
    while size - offset >= HEADER_LEN:
        version, rtype, next_id, content_len, padding_len = unpack(data, offset)
        start = offset + HEADER_LEN
        end = start + content_len
        if (rtype != STDIN or next_id != request_id or not content_len
                or version != VERSION_1 or end + padding_len > size):
            break
        if pieces is None:
            pieces = [first]
        pieces.append(data[start:end])
        offset = end + padding_len
    if pieces is None:
        return bytes(first), offset, 0
    return b"".join(pieces), offset, len(pieces) - 1


def decode_begin_request(content: bytes) -> BeginRequest:
    if len(content) != _BEGIN_BODY.size:
        raise ProtocolError("FCGI_BEGIN_REQUEST body is %d bytes, not 8" % len(content))
    return tuple.__new__(BeginRequest, _BEGIN_BODY.unpack(content))


def decode_end_request(content: bytes) -> EndRequest:
    if len(content) != _END_BODY.size:
        raise ProtocolError("FCGI_END_REQUEST body is %d bytes, not 8" % len(content))
    return EndRequest(*_END_BODY.unpack(content))


def decode_unknown_type(content: bytes) -> int:
    if len(content) != _UNKNOWN_TYPE_BODY.size:
        raise ProtocolError("FCGI_UNKNOWN_TYPE body is %d bytes, not 8" % len(content))
    return content[0]


def decode_params(data: bytes) -> list[tuple[str, str]]:
    """Name-value pairs (spec 3.4: lengths of 1 byte, or 4 with the top bit
    set) as latin-1 strings, the WSGI native strings (PEP 3333 "Unicode
    Issues"): a request's FCGI_PARAMS decoded at once, not two strings a pair."""
    text = data.decode("latin-1")
    pairs = []
    offset = 0
    size = len(data)
    unpack_len4 = _LEN4.unpack_from
    try:
        while offset < size:
            name_len = data[offset]
            if name_len & 0x80:
                name_len = unpack_len4(data, offset)[0] & 0x7FFFFFFF
                offset += 4
            else:
                offset += 1
            value_len = data[offset]
            if value_len & 0x80:
                value_len = unpack_len4(data, offset)[0] & 0x7FFFFFFF
                offset += 4
            else:
                offset += 1
            name_end = offset + name_len
            value_end = name_end + value_len
            pairs.append((text[offset:name_end], text[name_end:value_end]))
            offset = value_end
    except (IndexError, struct.error):
        raise ProtocolError("name-value pair length truncated at byte %d of %d"
                            % (offset, size)) from None
    if offset > size:  # the last pair ran past the end (slices stop at it): checked once, not per pair
        raise ProtocolError("name-value pair runs past the end of the data (name %d + value %d bytes, %d left)"
                            % (name_len, value_len, size - (offset - name_len - value_len)))
    return pairs


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """decode_params' pairs as bytes (management records, the client)."""
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in decode_params(data)]


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n > 0x7FFFFFFF:
        raise ValueError("name-value length %d does not fit in 31 bits" % n)
    return _LEN4.pack(n | 0x80000000)


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join(_encode_length(len(name)) + _encode_length(len(value)) + name + value
                    for name, value in pairs)


def encode_record(rtype: int, request_id: int, content: BytesLike = b"") -> bytes:
    """One record, padded to a multiple of 8 bytes as the spec recommends (3.3)."""
    length = len(content)
    if length > MAX_CONTENT_LEN:
        raise ValueError("record content of %d bytes exceeds 65535" % length)
    padding = -length & 7
    return _HEADER.pack(VERSION_1, rtype, request_id, length, padding) + content + _PADDING[padding]


def encode_stream(rtype: int, request_id: int, data: BytesLike) -> bytes:
    """Stream data (STDOUT, STDERR, STDIN, DATA, PARAMS) as records of <= 65535 bytes.

    Empty data gives nothing: the empty record that closes a stream is
    `encode_record(rtype, request_id)`.
    """
    if len(data) <= MAX_CONTENT_LEN:
        return encode_record(rtype, request_id, data) if data else b""
    view = memoryview(data)
    return b"".join(encode_record(rtype, request_id, bytes(view[i:i + MAX_CONTENT_LEN]))
                    for i in range(0, len(data), MAX_CONTENT_LEN))


def stream_parts(rtype: int, request_id: int, data: BytesLike) -> list[bytes | memoryview]:
    """`encode_stream` as a list of buffers (headers, slices of `data`,
    padding) for a scatter-gather send: the content is not copied."""
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for start in range(0, len(data), MAX_CONTENT_LEN):
        chunk = view[start:start + MAX_CONTENT_LEN]
        padding = -len(chunk) & 7
        parts += (_HEADER.pack(VERSION_1, rtype, request_id, len(chunk), padding), chunk, _PADDING[padding])
    return parts


def encode_begin_request(request_id: int, role: int = RESPONDER, flags: int = 0) -> bytes:
    return encode_record(BEGIN_REQUEST, request_id, _BEGIN_BODY.pack(role, flags))


def encode_end_request(request_id: int, app_status: int = 0,
                       protocol_status: int = REQUEST_COMPLETE) -> bytes:
    return encode_record(END_REQUEST, request_id,
                         _END_BODY.pack(app_status & 0xFFFFFFFF, protocol_status))


@functools.lru_cache(maxsize=1024)
def encode_stdout_end(request_id: int, app_status: int = 0) -> bytes:
    """What ends a response: the empty FCGI_STDOUT, then FCGI_END_REQUEST
    (spec 5.3, 5.5).  The same bytes for every response of a request id
    (web servers reuse a few ids): built once each."""
    return encode_record(STDOUT, request_id) + encode_end_request(request_id, app_status)


def encode_params(request_id: int, pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A whole FCGI_PARAMS stream, closed by its empty record."""
    return encode_stream(PARAMS, request_id, encode_pairs(pairs)) + encode_record(PARAMS, request_id)


def encode_get_values(names: Iterable[bytes]) -> bytes:
    return encode_record(GET_VALUES, NULL_REQUEST_ID, encode_pairs((n, b"") for n in names))


def encode_get_values_result(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    return encode_record(GET_VALUES_RESULT, NULL_REQUEST_ID, encode_pairs(pairs))


def encode_unknown_type(rtype: int) -> bytes:
    return encode_record(UNKNOWN_TYPE, NULL_REQUEST_ID, _UNKNOWN_TYPE_BODY.pack(rtype))
