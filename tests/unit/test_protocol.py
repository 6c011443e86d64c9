"""The sans-IO wire format: records, name-value pairs, padding, malformed input,
and byte-exact vectors from the FastCGI spec (Appendix B) and Go's net/http/fcgi."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgi_fcgi import protocol as p


def header(rtype, request_id, content_len, padding_len):
    """A record header written out field by field (spec 3.3)."""
    return bytes([1, rtype, request_id >> 8, request_id & 0xFF,
                  content_len >> 8, content_len & 0xFF, padding_len, 0])


# -- records ---------------------------------------------------------------------

ALL_TYPES = sorted(p.RECORD_TYPE_NAMES)


@pytest.mark.parametrize("rtype", ALL_TYPES)
@pytest.mark.parametrize("content", [b"", b"x", b"12345678", b"123456789", bytes(range(256)) * 3])
def test_every_record_type_round_trips_with_padding_to_eight(rtype, content):
    data = p.encode_record(rtype, 258, content)
    padding = -len(content) % 8
    assert data == header(rtype, 258, len(content), padding) + content + b"\0" * padding
    assert len(data) % 8 == 0
    parser = p.RecordParser()
    assert parser.feed(data) == [p.Record(rtype, 258, content)]
    assert not parser.mid_record


def test_begin_request_body():
    data = p.encode_begin_request(7, p.FILTER, p.KEEP_CONN)
    assert data == header(p.BEGIN_REQUEST, 7, 8, 0) + b"\x00\x03\x01" + b"\0" * 5
    record, = p.RecordParser().feed(data)
    begin = p.decode_begin_request(record.content)
    assert begin == p.BeginRequest(p.FILTER, p.KEEP_CONN) and begin.keep_conn
    assert not p.decode_begin_request(b"\x00\x01\x00" + b"\0" * 5).keep_conn


def test_end_request_body():
    data = p.encode_end_request(3, 0x01020304, p.OVERLOADED)
    assert data == header(p.END_REQUEST, 3, 8, 0) + b"\x01\x02\x03\x04\x02\0\0\0"
    record, = p.RecordParser().feed(data)
    assert p.decode_end_request(record.content) == p.EndRequest(0x01020304, p.OVERLOADED)
    # a negative exit status wraps to its 32-bit two's complement
    assert p.encode_end_request(1, -1)[8:12] == b"\xff\xff\xff\xff"


def test_unknown_type_body():
    data = p.encode_unknown_type(200)
    assert data == header(p.UNKNOWN_TYPE, 0, 8, 0) + b"\xc8" + b"\0" * 7
    record, = p.RecordParser().feed(data)
    assert p.decode_unknown_type(record.content) == 200


def test_get_values_and_result():
    ask = p.encode_get_values([p.MAX_CONNS, p.MPXS_CONNS])
    record, = p.RecordParser().feed(ask)
    assert (record.type, record.request_id) == (p.GET_VALUES, 0)
    assert p.decode_pairs(record.content) == [(p.MAX_CONNS, b""), (p.MPXS_CONNS, b"")]
    answer = p.encode_get_values_result([(p.MAX_CONNS, b"10")])
    record, = p.RecordParser().feed(answer)
    assert record.type == p.GET_VALUES_RESULT
    assert p.decode_pairs(record.content) == [(p.MAX_CONNS, b"10")]


def test_stream_splits_at_65535_and_empty_data_gives_nothing():
    assert p.encode_stream(p.STDOUT, 1, b"") == b""
    data = bytes(range(256)) * 600  # 153600 bytes: 65535 + 65535 + 22530
    records = p.RecordParser().feed(p.encode_stream(p.STDOUT, 1, data))
    assert [len(r.content) for r in records] == [65535, 65535, 22530]
    assert b"".join(r.content for r in records) == data
    assert p.encode_stream(p.STDOUT, 1, b"x" * 65535) == p.encode_record(p.STDOUT, 1, b"x" * 65535)


def test_record_content_over_65535_is_refused():
    with pytest.raises(ValueError):
        p.encode_record(p.STDOUT, 1, b"x" * 65536)


def test_params_stream_is_closed_by_an_empty_record():
    data = p.encode_params(5, [(b"A", b"1")])
    records = p.RecordParser().feed(data)
    assert records == [p.Record(p.PARAMS, 5, b"\x01\x01A1"), p.Record(p.PARAMS, 5, b"")]


def test_parser_honours_padding_chosen_by_the_peer():
    # A peer may pad with up to 255 bytes, whatever the content length (spec 3.3).
    data = header(p.STDIN, 1, 3, 255) + b"abc" + b"\xee" * 255 + header(p.STDIN, 1, 0, 0)
    parser = p.RecordParser()
    assert parser.feed(data[:200]) == []
    assert parser.feed(data[200:]) == [p.Record(p.STDIN, 1, b"abc"), p.Record(p.STDIN, 1, b"")]


def test_parser_keeps_a_partial_record():
    data = p.encode_record(p.STDIN, 1, b"hello")
    parser = p.RecordParser()
    assert parser.feed(data[:5]) == []
    assert parser.mid_record and parser.pending_bytes == 5
    assert parser.feed(data[5:11]) == []
    assert parser.feed(data[11:]) == [p.Record(p.STDIN, 1, b"hello")]
    assert not parser.mid_record


def test_parser_accepts_bytearray_and_memoryview():
    data = p.encode_record(p.STDIN, 1, b"hello")
    assert p.RecordParser().feed(bytearray(data)) == [p.Record(p.STDIN, 1, b"hello")]
    assert p.RecordParser().feed(memoryview(data)) == [p.Record(p.STDIN, 1, b"hello")]


def test_parser_joins_the_stdin_records_of_a_request_that_arrive_together():
    # nginx cuts a 64 KiB body into two 32 KiB records: the app's read of
    # 64 KiB then takes one chunk instead of joining two.
    first, second = b"a" * 32768, b"b" * 32768
    data = (p.encode_record(p.STDIN, 1, first) + header(p.STDIN, 1, 32768, 3) + second + b"\0" * 3
            + p.encode_record(p.STDIN, 1, b"c") + p.encode_record(p.STDIN, 1))
    assert p.RecordParser().feed(memoryview(data)) == [
        p.Record(p.STDIN, 1, first + second + b"c"), p.Record(p.STDIN, 1, b"")]


def test_parser_joins_stdin_records_only_of_one_request_and_whole_in_the_chunk():
    data = (p.encode_record(p.STDIN, 1, b"a") + p.encode_record(p.STDIN, 2, b"b")
            + p.encode_record(p.STDIN, 2, b"c") + p.encode_record(p.DATA, 2, b"d")
            + p.encode_record(p.STDIN, 2, b"e") + p.encode_record(p.STDIN, 2, b"f"))
    parser = p.RecordParser()
    assert parser.feed(data[:-3]) == [
        p.Record(p.STDIN, 1, b"a"), p.Record(p.STDIN, 2, b"bc"),
        p.Record(p.DATA, 2, b"d"), p.Record(p.STDIN, 2, b"e")]
    assert parser.feed(data[-3:]) == [p.Record(p.STDIN, 2, b"f")]


def _stdin_joined(records):
    """`records` with each run of non-empty FCGI_STDIN records of one request
    joined, as the parser may return them when they arrive in one chunk."""
    joined = []
    for record in records:
        last = joined[-1] if joined else None
        if (last is not None and record.type == p.STDIN == last.type and record.content
                and last.content and record.request_id == last.request_id):
            joined[-1] = p.Record(p.STDIN, last.request_id, last.content + record.content)
        else:
            joined.append(p.Record(*record))
    return joined


records_strategy = st.lists(
    st.tuples(st.sampled_from(ALL_TYPES + [0, 12, 255]), st.integers(0, 0xFFFF),
              st.binary(max_size=300)),
    max_size=12)


@settings(max_examples=200, deadline=None)
@given(records=records_strategy, paddings=st.lists(st.integers(0, 255), min_size=12, max_size=12),
       cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_parser_gives_the_same_records_whatever_the_chunking(records, paddings, cuts):
    data = b"".join(header(t, i, len(c), pad) + c + b"\xee" * pad
                    for (t, i, c), pad in zip(records, paddings, strict=False))
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    parser = p.RecordParser()
    got = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        got += parser.feed(data[start:end])
    assert _stdin_joined(got) == _stdin_joined([p.Record(t, i, c) for t, i, c in records])
    assert not parser.mid_record and parser.pending_bytes == 0


@settings(max_examples=100, deadline=None)
@given(records=records_strategy, cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_parser_keeps_nothing_of_a_reused_read_buffer(records, cuts):
    # The loop reads into one buffer and feeds a view of it: whatever the
    # parser returns or keeps must survive the buffer being overwritten.
    data = b"".join(p.encode_record(t, i, c) for t, i, c in records)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    buffer = bytearray(len(data))
    parser = p.RecordParser()
    got = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        buffer[:end - start] = data[start:end]
        got += parser.feed(memoryview(buffer)[:end - start])
        buffer[:] = b"\xff" * len(buffer)
    assert _stdin_joined(got) == _stdin_joined([p.Record(t, i, c) for t, i, c in records])
    assert all(type(record.content) is bytes for record in got)


def test_parser_fed_at_every_byte_boundary():
    stream = (p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN)
              + p.encode_params(1, [(b"N" * 130, b"v" * 200)])
              + p.encode_record(p.STDIN, 1, b"body") + p.encode_record(p.STDIN, 1))
    whole = p.RecordParser().feed(stream)
    assert len(whole) == 5
    for cut in range(len(stream) + 1):
        parser = p.RecordParser()
        assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == whole, cut
    parser = p.RecordParser()
    assert [r for i in range(len(stream)) for r in parser.feed(stream[i:i + 1])] == whole


# -- name-value pairs (spec 3.4) --------------------------------------------------

@pytest.mark.parametrize("length, encoded", [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"),
    (128, b"\x80\x00\x00\x80"), (1000, b"\x80\x00\x03\xe8"), (65536, b"\x80\x01\x00\x00"),
])
def test_pair_lengths_one_and_four_bytes(length, encoded):
    name, value = b"n" * length, b"v"
    data = p.encode_pairs([(name, value)])
    assert data == encoded + b"\x01" + name + value
    assert p.decode_pairs(data) == [(name, value)]
    data = p.encode_pairs([(b"n", b"v" * length)])
    assert data == b"\x01" + encoded + b"n" + b"v" * length
    assert p.decode_pairs(data) == [(b"n", b"v" * length)]


def test_pairs_big_values_and_many_pairs_round_trip():
    pairs = [(b"SMALL", b""), (b"", b"empty name"), (b"BIG", bytes(range(256)) * 4096),
             (b"X" * 127, b"Y" * 128), (b"X" * 128, b"Y" * 127)]
    assert p.decode_pairs(p.encode_pairs(pairs)) == pairs
    assert p.decode_params(p.encode_pairs(pairs)) == [(n.decode("latin-1"), v.decode("latin-1")) for n, v in pairs]


def test_params_are_latin1_strings_of_every_byte():
    """The WSGI native strings (PEP 3333): byte n is code point n, bytes
    that are not UTF-8 included."""
    pairs = [(b"HTTP_X", bytes(range(256))), (b"PATH_INFO", b"/caf\xc3\xa9"), (b"N\xff", b"")]
    params = p.decode_params(p.encode_pairs(pairs))
    assert params == [("HTTP_X", "".join(map(chr, range(256)))), ("PATH_INFO", "/caf\xc3\xa9"), ("N\xff", "")]
    assert all(type(name) is str and type(value) is str for name, value in params)


def test_pair_length_top_bit_is_masked():
    # 4-byte length: the high bit marks the form, the other 31 bits are the length.
    assert p.decode_pairs(b"\x80\x00\x00\x01\x01" + b"n" + b"v") == [(b"n", b"v")]


def test_pair_length_over_31_bits_is_refused():
    with pytest.raises(ValueError):
        p._encode_length(1 << 31)


@pytest.mark.parametrize("data", [
    b"\x05",                          # name length, no value length
    b"\x80\x00\x00",                  # 4-byte name length cut short
    b"\x01\x80\x00",                  # 4-byte value length cut short
    b"\x05\x01abc",                   # name runs past the end
    b"\x01\x05ab",                    # value runs past the end
    b"\x80\x00\x01\x00\x01" + b"x" * 10,  # 256-byte name announced, 10 given
    b"\x01\x01ab\x03",                # a good pair, then a truncated one
])
def test_malformed_pairs_raise_protocol_error(data):
    with pytest.raises(p.ProtocolError):
        p.decode_pairs(data)
    with pytest.raises(p.ProtocolError):
        p.decode_params(data)


@pytest.mark.parametrize("data", [b"\x05\x01abc", b"\x01\x01ab\x05\x01abc", b"\x01\x01ab\x01\x01cd\x05\x01abc"])
def test_a_pair_past_the_end_is_named_by_its_lengths(data):
    # the overrun is found once the pairs are read: the message still names the pair that ran past
    with pytest.raises(p.ProtocolError, match=r"name 5 \+ value 1 bytes, 3 left"):
        p.decode_params(data)


# -- malformed records ----------------------------------------------------------

@pytest.mark.parametrize("version", [0, 2, 255])
def test_bad_version_raises_protocol_error(version):
    data = bytes([version]) + p.encode_record(p.STDIN, 1, b"abc")[1:]
    with pytest.raises(p.ProtocolError, match="version"):
        p.RecordParser().feed(data)


def test_bad_version_after_good_records_raises():
    parser = p.RecordParser()
    assert parser.feed(p.encode_record(p.STDIN, 1, b"a")) == [p.Record(p.STDIN, 1, b"a")]
    with pytest.raises(p.ProtocolError):
        parser.feed(b"\x00" * 8)


def test_the_records_of_a_feed_are_counted_each_joined_one_too():
    parser = p.RecordParser()
    stdin = p.encode_record(p.STDIN, 1, b"x") * 5
    assert len(parser.feed(p.encode_record(p.PARAMS, 1, b"ab") + stdin + p.encode_record(p.STDIN, 1)[:3])) == 2
    assert parser.records_in_last_feed == 6  # PARAMS, five STDIN joined into one
    assert parser.feed(p.encode_record(p.STDIN, 1)[3:]) == [p.Record(p.STDIN, 1, b"")]
    assert parser.records_in_last_feed == 1


def test_whole_records_before_a_bad_header_in_one_chunk_come_first():
    parser = p.RecordParser()
    good = p.encode_record(p.STDIN, 1, b"a") + p.encode_record(p.PARAMS, 2, b"b")
    assert parser.feed(good + b"\x07" + b"\0" * 7 + good) == [p.Record(p.STDIN, 1, b"a"), p.Record(p.PARAMS, 2, b"b")]
    assert isinstance(parser.error, p.ProtocolError) and "version 7" in str(parser.error)
    for _ in range(2):  # the stream cannot be resumed
        with pytest.raises(p.ProtocolError) as caught:
            parser.feed(good)
        assert caught.value is parser.error


# What a web server configured for another protocol sends (nginx's
# proxy_pass, uwsgi_pass, scgi_pass), or a client that came here straight.
FOREIGN_STARTS = {
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n": "HTTP",
    b"POST /form HTTP/1.0\r\n": "HTTP",
    b"OPTIONS * HTTP/1.1\r\n": "HTTP",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": "HTTP",
    bytes.fromhex("16030100a5010000a10303") + b"\x00" * 32: "TLS",
    b"70:CONTENT_LENGTH\x000\x00SCGI\x001\x00": "SCGI",
    b"\x00\x9c\x01\x00\x0e\x00REQUEST_METHOD\x03\x00GET": "uwsgi",
}


@pytest.mark.parametrize("data", sorted(FOREIGN_STARTS), ids=lambda data: FOREIGN_STARTS[data])
def test_another_protocol_is_named(data):
    with pytest.raises(p.ForeignProtocol) as caught:
        p.RecordParser().feed(data)
    assert caught.value.protocol == FOREIGN_STARTS[data]
    assert isinstance(caught.value, p.ProtocolError) and "not FastCGI" in str(caught.value)


def test_another_protocol_is_named_when_its_first_bytes_trickle_in():
    parser = p.RecordParser()
    assert parser.feed(b"G") == [] and parser.feed(b"ET / H") == []
    with pytest.raises(p.ForeignProtocol, match="proxy_pass"):
        parser.feed(b"TTP/1.1\r\n")


@pytest.mark.parametrize("data", [b"GETX / HTTP/1.1", b"get / http/1.1", b"\x00" * 8, b"\x02\x01\x00\x01\x00\x00\x00\x00",
                                  b"\x16\x05\x00\x00\x00\x00\x00\x00"])
def test_other_bad_headers_are_plain_protocol_errors(data):
    with pytest.raises(p.ProtocolError, match="version") as caught:
        p.RecordParser().feed(data)
    assert not isinstance(caught.value, p.ForeignProtocol)


@pytest.mark.parametrize("decode", [p.decode_begin_request, p.decode_end_request, p.decode_unknown_type])
@pytest.mark.parametrize("size", [0, 7, 9, 16])
def test_fixed_size_bodies_of_wrong_size_raise_protocol_error(decode, size):
    with pytest.raises(p.ProtocolError):
        decode(b"\0" * size)


def test_protocol_error_is_one_exception_type():
    for bad in (lambda: p.decode_pairs(b"\x09"), lambda: p.decode_begin_request(b""),
                lambda: p.RecordParser().feed(b"\x07" + b"\0" * 7)):
        with pytest.raises(p.ProtocolError):
            bad()


# -- FastCGI spec Appendix B: typical protocol message flow ----------------------
# The spec writes records as {type, requestId, content}; contents with "..." are
# shortened there, the same short strings are used here.

PAIRS_B = b"\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42"


def test_appendix_b_params_are_the_spec_bytes():
    assert p.encode_pairs([(b"SERVER_PORT", b"80"), (b"SERVER_ADDR", b"199.170.183.42")]) == PAIRS_B
    assert p.decode_pairs(PAIRS_B) == [(b"SERVER_PORT", b"80"), (b"SERVER_ADDR", b"199.170.183.42")]


def test_appendix_b_example_1_simple_request_and_response():
    web_server = (header(p.BEGIN_REQUEST, 1, 8, 0) + b"\x00\x01\x00\0\0\0\0\0"
                  + header(p.PARAMS, 1, len(PAIRS_B), -len(PAIRS_B) % 8) + PAIRS_B + b"\0" * (-len(PAIRS_B) % 8)
                  + header(p.PARAMS, 1, 0, 0)
                  + header(p.STDIN, 1, 0, 0))
    assert web_server == (p.encode_begin_request(1, p.RESPONDER, 0) + p.encode_params(1, [
        (b"SERVER_PORT", b"80"), (b"SERVER_ADDR", b"199.170.183.42")]) + p.encode_record(p.STDIN, 1))
    out = b"Content-type: text/html\r\n\r\n<html>\n<head> ... "
    app = (header(p.STDOUT, 1, len(out), -len(out) % 8) + out + b"\0" * (-len(out) % 8)
           + header(p.STDOUT, 1, 0, 0)
           + header(p.END_REQUEST, 1, 8, 0) + b"\0\0\0\0" + b"\x00" + b"\0\0\0")
    assert app == (p.encode_stream(p.STDOUT, 1, out) + p.encode_record(p.STDOUT, 1)
                   + p.encode_end_request(1, 0, p.REQUEST_COMPLETE))


def test_appendix_b_example_2_params_split_inside_a_name():
    from wsgi_fcgi.connection import RequestStarted, ServerConnection, StdinReceived
    records = [
        p.encode_begin_request(1, p.RESPONDER, 0),
        p.encode_record(p.PARAMS, 1, b"\013\002SERVER_PORT80\013\016SER"),
        p.encode_record(p.PARAMS, 1, b"VER_ADDR199.170.183.42"),
        p.encode_record(p.PARAMS, 1, b""),
        p.encode_record(p.STDIN, 1, b"quantity=100&item=3047936"),
        p.encode_record(p.STDIN, 1, b""),
    ]
    events = ServerConnection().receive_data(b"".join(records))
    assert events == [
        RequestStarted(1, p.RESPONDER, False, [("SERVER_PORT", "80"), ("SERVER_ADDR", "199.170.183.42")]),
        StdinReceived(1, b"quantity=100&item=3047936"),
        StdinReceived(1, b""),
    ]


def test_appendix_b_example_3_stderr_and_nonzero_app_status():
    end = p.encode_end_request(1, 938, p.REQUEST_COMPLETE)
    assert end == header(p.END_REQUEST, 1, 8, 0) + struct.pack("!L", 938) + b"\0\0\0\0"
    err = b"config error: missing SI_UID\n"
    assert p.encode_stream(p.STDERR, 1, err) == header(p.STDERR, 1, 29, 3) + err + b"\0\0\0"
    assert p.decode_end_request(end[8:]) == p.EndRequest(938, 0)


def test_appendix_b_example_4_two_requests_multiplexed():
    from wsgi_fcgi.connection import RequestStarted, ServerConnection
    conn = ServerConnection()
    params = [("SERVER_PORT", "80"), ("SERVER_ADDR", "199.170.183.42")]
    first = (p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN) + p.encode_record(p.PARAMS, 1, PAIRS_B)
             + p.encode_record(p.PARAMS, 1) + p.encode_begin_request(2, p.RESPONDER, p.KEEP_CONN)
             + p.encode_record(p.PARAMS, 2, PAIRS_B) + p.encode_record(p.STDIN, 1))
    # Request 1's STDIN ends empty in the data that started it: no StdinReceived.
    assert conn.receive_data(first) == [RequestStarted(1, p.RESPONDER, True, params, body_empty=True)]
    assert conn.live_requests == 2
    second = p.encode_record(p.PARAMS, 2) + p.encode_record(p.STDIN, 2)
    assert conn.receive_data(second) == [RequestStarted(2, p.RESPONDER, True, params, body_empty=True)]
    conn.finish_request(2)  # the app finishes the requests out of order
    assert conn.is_live(1) and not conn.is_live(2)
    conn.finish_request(1)
    assert conn.live_requests == 0


# -- Go's net/http/fcgi tests (src/net/http/fcgi/fcgi_test.go) --------------------

@pytest.mark.parametrize("size, encoded", [  # sizeTests
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x00\x00\x80"), (1000, b"\x80\x00\x03\xe8"),
    (33554431, b"\x81\xff\xff\xff"),
])
def test_go_size_tests(size, encoded):
    assert p._encode_length(size) == encoded
    if size < 100000:
        name = b"n" * size
        assert p.decode_pairs(encoded + b"\x00" + name) == [(name, b"")]


def test_go_stream_tests_single_record():
    raw = bytes([1, p.STDOUT, 0, 1, 0, 0, 0, 0])
    assert p.encode_record(p.STDOUT, 1) == raw
    assert p.RecordParser().feed(raw) == [p.Record(p.STDOUT, 1, b"")]


def test_go_stream_tests_two_records():
    raw = b"".join([
        bytes([1, p.STDIN, 0x01, 0x2C, 0xFF, 0xFF, 1, 0]), bytes(65536),
        bytes([1, p.STDIN, 0x01, 0x2C, 0x01, 0xD1, 7, 0]), bytes(472),
        bytes([1, p.STDIN, 0x01, 0x2C, 0, 0, 0, 0]),
    ])
    assert p.encode_stream(p.STDIN, 300, bytes(66000)) + p.encode_record(p.STDIN, 300) == raw
    # Parsed, the two records whole in one chunk come out joined.
    assert p.RecordParser().feed(raw) == [p.Record(p.STDIN, 300, bytes(66000)),
                                          p.Record(p.STDIN, 300, b"")]


def test_go_get_values_answer():
    # Go's child answers an empty FCGI_GET_VALUES with this record (then an
    # empty stream terminator of its own, which the spec does not ask for).
    want = b"\x01\n\x00\x00\x00\x12\x06\x00" + b"\x0f\x01FCGI_MPXS_CONNS1" + b"\0" * 6
    assert p.encode_get_values_result([(p.MPXS_CONNS, b"1")]) == want


def go_make_record(rtype, request_id, content):
    """fcgi_test.go makeRecord: no padding."""
    return bytes([1, rtype, request_id >> 8, request_id & 0xFF, len(content) >> 8, len(content) & 0xFF, 0, 0]) + content


def go_pair11(name, value):
    return bytes([len(name), len(value)]) + name + value


GO_STREAM_BEGIN_TYPE_STDIN = b"".join([
    go_make_record(p.BEGIN_REQUEST, 1, bytes([0, p.RESPONDER, 0, 0, 0, 0, 0, 0])),
    go_make_record(p.PARAMS, 1, go_pair11(b"REQUEST_METHOD", b"GET")),
    go_make_record(p.PARAMS, 1, go_pair11(b"SERVER_PROTOCOL", b"HTTP/1.1")),
    go_make_record(p.PARAMS, 1, b""),
    go_make_record(p.STDIN, 1, b"0123456789abcdef"),
])


def test_go_clean_up_tests_abort_after_stdin_began():
    from wsgi_fcgi.connection import RequestAborted, RequestStarted, ServerConnection, StdinReceived
    conn = ServerConnection()
    events = conn.receive_data(GO_STREAM_BEGIN_TYPE_STDIN + go_make_record(p.ABORT_REQUEST, 1, b""))
    assert events == [
        RequestStarted(1, p.RESPONDER, False, [("REQUEST_METHOD", "GET"), ("SERVER_PROTOCOL", "HTTP/1.1")]),
        StdinReceived(1, b"0123456789abcdef"),
        RequestAborted(1),
    ]


def test_go_clean_up_tests_stream_cut_mid_request():
    from wsgi_fcgi.connection import ServerConnection
    conn = ServerConnection()
    conn.receive_data(GO_STREAM_BEGIN_TYPE_STDIN)
    assert conn.is_live(1) and not conn.mid_record
