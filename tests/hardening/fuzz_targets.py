"""Fuzz targets for the sans-IO parser and the connection state machine.

Invariants checked for every input:
  * only `ProtocolError` escapes `ServerConnection.receive_data` (and
    `decode_pairs`); any other exception is a bug;
  * every `Reply` is whole, well-formed FastCGI records a web server accepts;
  * the parser never holds more than one record's worth of bytes.

Run by hypothesis in the test suite (tests/hardening/test_fuzz.py), replayed
from tests/hardening/corpus/, and by atheris when it is installed:

    .venv/bin/python tests/hardening/fuzz_targets.py -max_total_time=60 tests/hardening/corpus
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

if __name__ == "__main__":  # under atheris: the checkout's package (the tests import the one under test),
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # instrumenting only the code under test
    import atheris
    with atheris.instrument_imports(include=["wsgi_fcgi"]):
        from wsgi_fcgi import connection, protocol  # noqa: F401

from wsgi_fcgi import protocol as p  # noqa: E402
from wsgi_fcgi.connection import (  # noqa: E402
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

CORPUS = Path(__file__).resolve().parent / "corpus"
#: A record is at most 8 + 65535 + 255 bytes; a parser keeping more is leaking.
MAX_PENDING = p.HEADER_LEN + p.MAX_CONTENT_LEN + 255
_REPLY_TYPES = {p.STDOUT, p.END_REQUEST, p.GET_VALUES_RESULT, p.UNKNOWN_TYPE}


def stream_from_bytes(data: bytes) -> bytes:
    """Any bytes -> a stream of mostly valid record headers around the input's bytes.

    Random bytes almost never start with version 1, so raw input alone only
    exercises the first check; this mapping lets the fuzzer reach the state
    machine.  Per record: a control byte (type, small request id, rare bad
    version), a length byte, then that many content bytes.
    """
    out = bytearray()
    offset = 0
    while offset + 2 <= len(data):
        control, length = data[offset], data[offset + 1]
        offset += 2
        content = data[offset:offset + length]
        offset += length
        rtype = control % 13  # 0 and 12: unknown types
        request_id = (control >> 4) % 4  # 0 = management, 1..3 = live ids
        version = p.VERSION_1 if control != 0xFF else 2
        padding = length & 7 if control & 8 else 0
        if rtype == p.BEGIN_REQUEST and control & 0x40:
            content = bytes((0, 1 + length % 4, control & 1, 0, 0, 0, 0, 0))
        elif rtype in (p.PARAMS, p.GET_VALUES) and control & 0x40:
            content = p.encode_pairs([(content[:length // 2], content[length // 2:])])
        size = len(content)  # a pairs encoding may pass 255 bytes
        out += bytes((version, rtype, 0, request_id, size >> 8, size & 0xFF, padding, 0))
        out += content + b"\0" * padding
    return bytes(out)


def check_reply(data: bytes) -> None:
    parser = p.RecordParser()
    records = parser.feed(data)
    assert not parser.mid_record, "a Reply ends inside a record"
    assert records, "an empty Reply"
    for record in records:
        assert record.type in _REPLY_TYPES, record
        if record.type == p.END_REQUEST:
            assert p.decode_end_request(record.content).protocol_status <= p.UNKNOWN_ROLE
            assert record.request_id != p.NULL_REQUEST_ID
        elif record.type == p.GET_VALUES_RESULT:
            p.decode_pairs(record.content)
            assert record.request_id == p.NULL_REQUEST_ID
        elif record.type == p.UNKNOWN_TYPE:
            p.decode_unknown_type(record.content)
            assert record.request_id == p.NULL_REQUEST_ID


def check_event(conn: ServerConnection, event) -> None:
    kind = type(event)
    if kind is Reply:
        check_reply(event.data)
    elif kind is RequestStarted:
        assert event.role in p.ROLE_NAMES
        assert all(type(n) is str and type(v) is str for n, v in event.params)
        # A finished request frees its id at once, as the server does after END_REQUEST.
        if event.request_id % 2:
            conn.finish_request(event.request_id)
    elif kind in (StdinReceived, FilterDataReceived, RequestAborted, ParamsTooLarge):
        assert 0 < event.request_id <= 0xFFFF
        if kind is ParamsTooLarge:
            conn.finish_request(event.request_id)
    elif kind is PacingStarted:  # a flood of tiny records (ServerConnection._pace)
        assert event.records > 64 and event.records * 64 >= event.size, event
        assert conn.paced
    else:
        assert kind is Ignored, event


def run_connection(data: bytes, chunk: int = 0, max_params_size: int = 4096) -> None:
    """Feed `data` to one ServerConnection in chunks of `chunk` bytes (0: whole)."""
    conn = ServerConnection(max_requests=3, max_params_size=max_params_size)
    step = chunk or len(data) or 1
    for start in range(0, len(data), step):
        try:
            events = conn.receive_data(data[start:start + step])
        except p.ProtocolError:
            return  # the server closes the connection: the expected refusal
        for event in events:
            check_event(conn, event)
        assert conn._parser.pending_bytes <= MAX_PENDING
        # unfinished params of all requests together stay within the one limit
        assert 0 <= conn._params_buffered <= conn.max_params_size


def run_pairs(data: bytes) -> None:
    try:
        pairs = p.decode_pairs(data)
    except p.ProtocolError:
        return
    assert p.decode_pairs(p.encode_pairs(pairs)) == pairs


def fuzz_one(data: bytes) -> None:
    """The whole target for one input, as atheris and the corpus replay run it."""
    chunk = data[0] % 17 if data else 0
    run_connection(data, chunk)
    run_connection(stream_from_bytes(data), chunk)
    run_connection(stream_from_bytes(data), 1)
    run_pairs(data)


def save_to_corpus(data: bytes) -> Path:
    """Keep an input that broke an invariant as a regression case."""
    CORPUS.mkdir(exist_ok=True)
    path = CORPUS / ("crash-%s.bin" % hashlib.sha1(data).hexdigest()[:16])
    path.write_bytes(data)
    return path


def _atheris_main() -> None:
    import atheris  # optional: pip install atheris

    def target(data: bytes) -> None:
        try:
            fuzz_one(data)
        except BaseException:
            save_to_corpus(data)
            raise

    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    _atheris_main()
