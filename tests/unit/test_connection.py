"""The per-connection state machine (sans-IO): management records, roles,
request id bookkeeping, aborts, limits."""

import pytest

from wsgi_fcgi import protocol as p
from wsgi_fcgi.connection import (
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

PARAMS = [(b"REQUEST_METHOD", b"GET"), (b"SCRIPT_NAME", b"/x")]
#: PARAMS as RequestStarted carries them: latin-1 strings (protocol.decode_params)
STARTED_PARAMS = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/x")]


def begin(request_id=1, role=p.RESPONDER, keep_conn=False):
    return p.encode_begin_request(request_id, role, p.KEEP_CONN if keep_conn else 0)


def reply_records(event):
    assert type(event) is Reply
    return p.RecordParser().feed(event.data)


def test_get_values_answers_only_the_names_asked():
    values = {p.MAX_CONNS: b"1024", p.MAX_REQS: b"264", p.MPXS_CONNS: b"1"}
    conn = ServerConnection(values=values)
    event, = conn.receive_data(p.encode_get_values([p.MAX_REQS, b"FCGI_SOMETHING_ELSE"]))
    record, = reply_records(event)
    assert (record.type, record.request_id) == (p.GET_VALUES_RESULT, 0)
    assert p.decode_pairs(record.content) == [(p.MAX_REQS, b"264")]
    event, = conn.receive_data(p.encode_get_values([p.MPXS_CONNS, p.MAX_CONNS, p.MAX_REQS]))
    assert p.decode_pairs(reply_records(event)[0].content) == [
        (p.MPXS_CONNS, b"1"), (p.MAX_CONNS, b"1024"), (p.MAX_REQS, b"264")]


def test_get_values_with_no_known_name_gives_an_empty_result():
    event, = ServerConnection().receive_data(p.encode_get_values([b"NOPE"]))
    record, = reply_records(event)
    assert record == p.Record(p.GET_VALUES_RESULT, 0, b"")


def test_default_values_say_the_connection_multiplexes():
    event, = ServerConnection().receive_data(p.encode_get_values([p.MPXS_CONNS]))
    assert p.decode_pairs(reply_records(event)[0].content) == [(p.MPXS_CONNS, b"1")]


@pytest.mark.parametrize("rtype", [0, 12, 99, 255, p.GET_VALUES_RESULT, p.BEGIN_REQUEST])
def test_unknown_management_type_gets_unknown_type(rtype):
    event, = ServerConnection().receive_data(p.encode_record(rtype, 0, b"whatever"))
    record, = reply_records(event)
    assert record.type == p.UNKNOWN_TYPE and record.request_id == 0
    assert p.decode_unknown_type(record.content) == rtype


@pytest.mark.parametrize("role", [0, 4, 0xFFFF])
def test_unknown_role_is_refused_and_its_records_ignored(role):
    conn = ServerConnection()
    event, = conn.receive_data(begin(3, role))
    record, = reply_records(event)
    assert record.type == p.END_REQUEST and record.request_id == 3
    assert p.decode_end_request(record.content) == p.EndRequest(0, p.UNKNOWN_ROLE)
    assert not conn.is_live(3)
    events = conn.receive_data(p.encode_params(3, PARAMS) + p.encode_record(p.STDIN, 3))
    assert [type(e) for e in events] == [Ignored, Ignored, Ignored]


def test_responder_request_flow():
    conn = ServerConnection()
    assert conn.receive_data(begin(1, keep_conn=True)) == []
    assert conn.is_live(1)
    assert conn.receive_data(p.encode_params(1, PARAMS)) == [RequestStarted(1, p.RESPONDER, True, STARTED_PARAMS)]
    assert conn.receive_data(p.encode_record(p.STDIN, 1, b"abc") + p.encode_record(p.STDIN, 1)) == [
        StdinReceived(1, b"abc"), StdinReceived(1, b"")]
    conn.finish_request(1)
    assert not conn.is_live(1) and conn.live_requests == 0
    # the id is free again
    assert conn.receive_data(begin(1) + p.encode_params(1, [])) == [RequestStarted(1, p.RESPONDER, False, [])]


def test_a_body_that_ends_empty_in_the_data_of_its_params_comes_with_the_start():
    get = begin(1) + p.encode_params(1, PARAMS) + p.encode_record(p.STDIN, 1)
    assert ServerConnection().receive_data(get) == [
        RequestStarted(1, p.RESPONDER, False, STARTED_PARAMS, body_empty=True)]
    conn = ServerConnection()  # the end of STDIN in the next read: an event of its own
    assert conn.receive_data(get[:-8]) == [RequestStarted(1, p.RESPONDER, False, STARTED_PARAMS)]
    assert conn.receive_data(get[-8:]) == [StdinReceived(1, b"")]
    post = (begin(1) + p.encode_params(1, PARAMS) + p.encode_record(p.STDIN, 1, b"a")
            + p.encode_record(p.STDIN, 1))
    assert ServerConnection().receive_data(post) == [
        RequestStarted(1, p.RESPONDER, False, STARTED_PARAMS), StdinReceived(1, b"a"), StdinReceived(1, b"")]
    two = begin(1) + begin(2) + p.encode_params(1, PARAMS) + p.encode_params(2, PARAMS)
    conn = ServerConnection()  # only the event right before the end of STDIN is its request's start
    assert conn.receive_data(two + p.encode_record(p.STDIN, 1) + p.encode_record(p.STDIN, 2)) == [
        RequestStarted(1, p.RESPONDER, False, STARTED_PARAMS),
        RequestStarted(2, p.RESPONDER, False, STARTED_PARAMS), StdinReceived(1, b""),
        StdinReceived(2, b"")]


def test_overloaded_past_max_requests_per_connection():
    conn = ServerConnection(max_requests=2)
    assert conn.receive_data(begin(1) + begin(2)) == []
    event, = conn.receive_data(begin(3))
    assert p.decode_end_request(reply_records(event)[0].content) == p.EndRequest(0, p.OVERLOADED)
    assert reply_records(event)[0].request_id == 3
    assert not conn.is_live(3) and conn.live_requests == 2
    conn.finish_request(1)
    assert conn.receive_data(begin(3)) == [] and conn.is_live(3)


def test_duplicate_begin_for_a_live_id_is_a_protocol_error():
    conn = ServerConnection()
    conn.receive_data(begin(5))
    with pytest.raises(p.ProtocolError, match="still active"):
        conn.receive_data(begin(5))


def test_begin_with_a_bad_body_is_a_protocol_error():
    with pytest.raises(p.ProtocolError):
        ServerConnection().receive_data(p.encode_record(p.BEGIN_REQUEST, 1, b"\x00\x01"))


@pytest.mark.parametrize("rtype", [p.PARAMS, p.STDIN, p.DATA, p.ABORT_REQUEST])
def test_records_for_inactive_ids_are_ignored(rtype):
    event, = ServerConnection().receive_data(p.encode_record(rtype, 9, b"x"))
    assert type(event) is Ignored and event.record.request_id == 9


@pytest.mark.parametrize("rtype", [p.STDOUT, p.STDERR, p.END_REQUEST, p.GET_VALUES, 77])
def test_records_a_web_server_does_not_send_are_ignored(rtype):
    conn = ServerConnection()
    conn.receive_data(begin(1))
    event, = conn.receive_data(p.encode_record(rtype, 1, b"x"))
    assert type(event) is Ignored
    assert conn.is_live(1)


def test_abort_before_params_ends_the_request_at_once():
    conn = ServerConnection()
    conn.receive_data(begin(1) + p.encode_record(p.PARAMS, 1, p.encode_pairs(PARAMS)))
    event, = conn.receive_data(p.encode_record(p.ABORT_REQUEST, 1))
    record, = reply_records(event)
    assert record.type == p.END_REQUEST and record.request_id == 1
    assert p.decode_end_request(record.content) == p.EndRequest(0, p.REQUEST_COMPLETE)
    assert not conn.is_live(1)


def test_abort_after_params_is_reported_to_the_runner():
    conn = ServerConnection()
    conn.receive_data(begin(1) + p.encode_params(1, PARAMS))
    assert conn.receive_data(p.encode_record(p.ABORT_REQUEST, 1)) == [RequestAborted(1)]
    assert conn.is_live(1)  # live until the runner sends END_REQUEST
    conn.finish_request(1)
    assert not conn.is_live(1)


def test_params_over_the_limit():
    conn = ServerConnection(max_params_size=100)
    conn.receive_data(begin(1))
    big = p.encode_pairs([(b"HTTP_X", b"v" * 200)])
    events = conn.receive_data(p.encode_record(p.PARAMS, 1, big))
    assert events == [ParamsTooLarge(1, len(big))]
    # the rest of the refused request is dropped quietly
    assert conn.receive_data(p.encode_record(p.PARAMS, 1, b"more") + p.encode_record(p.PARAMS, 1)
                             + p.encode_record(p.STDIN, 1, b"body") + p.encode_record(p.DATA, 1, b"d")) == []


def test_params_at_the_limit_are_fine():
    pairs = p.encode_pairs([(b"A", b"b" * 200)])
    conn = ServerConnection(max_params_size=len(pairs))
    events = conn.receive_data(begin(1) + p.encode_record(p.PARAMS, 1, pairs) + p.encode_record(p.PARAMS, 1))
    assert events == [RequestStarted(1, p.RESPONDER, False, [("A", "b" * 200)])]


def test_params_in_tiny_records_count_64_bytes_a_record():
    """Each piece held costs about 48 bytes of objects beside its content:
    20,000 records of 3 bytes hold 1 MB, not 60 KB."""
    conn = ServerConnection(max_params_size=1 << 20)
    conn.receive_data(begin(1))
    pairs = p.encode_pairs([(b"X", b"")])  # 3 bytes
    events = []
    for _ in range(20):
        events += conn.receive_data(p.encode_record(p.PARAMS, 1, pairs) * 1000)
    assert events == [PacingStarted(1000, 16000), ParamsTooLarge(1, (1 << 20) // 64 * 64 + 64)]


def test_params_in_ordinary_records_count_their_bytes():
    conn = ServerConnection(max_params_size=1 << 20)
    conn.receive_data(begin(1))
    pairs = p.encode_pairs([(b"HTTP_X_%d" % i, b"v" * 200) for i in range(250)])  # about 53 KB a record
    records = b"".join(p.encode_record(p.PARAMS, 1, pairs) for _ in range(18))  # about 1 MB in all
    assert len(pairs) * 18 <= 1 << 20
    started, = conn.receive_data(records + p.encode_record(p.PARAMS, 1))
    assert type(started) is RequestStarted and len(started.params) == 18 * 250


def test_params_of_many_tiny_pairs_count_64_bytes_a_pair():
    """A pair decoded holds a tuple, a list slot and two strings: 500,000
    empty pairs (1 MB) held 36 MB while the request waited for its body."""
    def request_of(pairs):
        conn = ServerConnection(max_params_size=1 << 20)
        return conn.receive_data(begin(1) + p.encode_stream(p.PARAMS, 1, b"\0\0" * pairs) + p.encode_record(p.PARAMS, 1))
    assert request_of(16384) == [RequestStarted(1, p.RESPONDER, False, [("", "")] * 16384)]
    assert request_of(16385) == [ParamsTooLarge(1, 16385 * 64)]
    assert request_of(500_000) == [ParamsTooLarge(1, 500_000 * 64)]


def test_a_4k_limit_takes_a_request_of_60_headers():
    """uWSGI users carry their buffer-size of 4096 over."""
    params = [(b"HTTP_X_HEADER_%d" % i, b"value") for i in range(60)]
    started, = ServerConnection(max_params_size=4096).receive_data(begin(1) + p.encode_params(1, params))
    assert type(started) is RequestStarted


def test_malformed_params_are_a_protocol_error():
    conn = ServerConnection()
    with pytest.raises(p.ProtocolError):
        conn.receive_data(begin(1) + p.encode_record(p.PARAMS, 1, b"\x05\x05ab") + p.encode_record(p.PARAMS, 1))


def test_stdin_before_params_ended_is_a_protocol_error():
    conn = ServerConnection()
    with pytest.raises(p.ProtocolError):
        conn.receive_data(begin(1) + p.encode_record(p.STDIN, 1, b"x"))


def test_params_after_params_ended_is_a_protocol_error():
    conn = ServerConnection()
    conn.receive_data(begin(1) + p.encode_params(1, PARAMS))
    with pytest.raises(p.ProtocolError):
        conn.receive_data(p.encode_record(p.PARAMS, 1, b"\x01\x01ab"))


def test_stdin_after_its_end_is_a_protocol_error():
    conn = ServerConnection()
    conn.receive_data(begin(1) + p.encode_params(1, PARAMS) + p.encode_record(p.STDIN, 1))
    with pytest.raises(p.ProtocolError):
        conn.receive_data(p.encode_record(p.STDIN, 1, b"late"))


GET_1 = begin(1, keep_conn=True) + p.encode_params(1, PARAMS) + p.encode_record(p.STDIN, 1)
BAD_HEADER = b"\x07" + b"\0" * 7


@pytest.mark.parametrize("bad", [BAD_HEADER, p.encode_record(p.STDIN, 1, b"late")], ids=["bad-header", "stdin-after-end"])
def test_a_request_whole_before_bad_input_in_the_same_data_is_still_started(bad):
    """h11's way: the events of the records before the error first, the error
    kept for the caller to handle after them."""
    conn = ServerConnection()
    assert conn.receive_data(GET_1 + bad + GET_1) == [RequestStarted(1, p.RESPONDER, True, STARTED_PARAMS, True)]
    assert isinstance(conn.error, p.ProtocolError) and not conn.mid_record
    with pytest.raises(p.ProtocolError) as again:  # nothing more is read
        conn.receive_data(GET_1)
    assert again.value is conn.error


def test_bad_input_with_no_event_before_it_raises_at_once():
    conn = ServerConnection()
    with pytest.raises(p.ProtocolError) as caught:
        conn.receive_data(begin(1) + BAD_HEADER)
    assert conn.error is caught.value and not conn.mid_record


def test_bad_input_after_a_partial_record_leaves_no_record_pending():
    conn = ServerConnection()
    conn.receive_data(GET_1)
    with pytest.raises(p.ProtocolError):  # the STDIN after its end, then half a record
        conn.receive_data(p.encode_record(p.STDIN, 1, b"late") + p.encode_record(p.STDIN, 2, b"x" * 100)[:50])
    assert not conn.mid_record


def body_records(request_id, size, piece):
    return b"".join(p.encode_record(p.STDIN, request_id, b"b" * piece) for _ in range(size // piece))


def test_a_web_servers_traffic_is_never_paced():
    conn = ServerConnection()
    for request_id in range(1, 200):
        params = p.encode_params(request_id, PARAMS + [(b"HTTP_X_%d" % i, b"v") for i in range(60)])
        conn.receive_data(begin(request_id, keep_conn=True) + params + body_records(request_id, 65536, 32760)
                          + p.encode_record(p.STDIN, request_id))
        conn.finish_request(request_id)
        assert not conn.paced


@pytest.mark.parametrize("flood", ["get-values", "one-byte-stdin", "stdin-of-a-refused-request"])
def test_a_flood_of_tiny_records_is_read_in_small_pieces_until_ordinary_input_comes(flood):
    conn = ServerConnection(max_params_size=100)
    conn.receive_data(begin(1, keep_conn=True) + p.encode_params(1, PARAMS))
    if flood == "stdin-of-a-refused-request":  # dropped without an event each
        conn.receive_data(begin(2) + p.encode_record(p.PARAMS, 2, b"x" * 200))
    tiny = {"get-values": p.encode_get_values([]), "one-byte-stdin": p.encode_record(p.STDIN, 1, b"a"),
            "stdin-of-a-refused-request": p.encode_record(p.STDIN, 2, b"a")}[flood]
    started = [e for e in conn.receive_data(tiny * 1000) if isinstance(e, PacingStarted)]
    assert conn.paced and started == [PacingStarted(1000, len(tiny) * 1000)]
    conn.receive_data(body_records(1, 4096, 4088))  # a little ordinary input does not end it ...
    assert not any(isinstance(e, PacingStarted) for e in conn.receive_data(tiny * 100))  # nor starts it again
    assert conn.paced
    for _ in range(8):
        assert conn.paced
        conn.receive_data(body_records(1, 32768, 32760))  # ... 256 KiB of it does
    assert not conn.paced
    assert [e for e in conn.receive_data(tiny * 1000) if isinstance(e, PacingStarted)]  # a new flood


def test_a_few_tiny_records_are_not_a_flood():
    conn = ServerConnection()
    conn.receive_data(p.encode_get_values([]) * 64)
    assert not conn.paced


def test_filter_gets_stdin_then_data():
    conn = ServerConnection()
    events = conn.receive_data(begin(1, p.FILTER) + p.encode_params(1, PARAMS)
                               + p.encode_record(p.STDIN, 1, b"in") + p.encode_record(p.STDIN, 1)
                               + p.encode_record(p.DATA, 1, b"file ") + p.encode_record(p.DATA, 1, b"data")
                               + p.encode_record(p.DATA, 1))
    assert events == [RequestStarted(1, p.FILTER, False, STARTED_PARAMS), StdinReceived(1, b"in"), StdinReceived(1, b""),
                      FilterDataReceived(1, b"file "), FilterDataReceived(1, b"data"), FilterDataReceived(1, b"")]


def test_data_for_a_responder_is_a_protocol_error():
    conn = ServerConnection()
    conn.receive_data(begin(1) + p.encode_params(1, PARAMS) + p.encode_record(p.STDIN, 1))
    with pytest.raises(p.ProtocolError):
        conn.receive_data(p.encode_record(p.DATA, 1, b"x"))


def test_filter_data_before_stdin_ended_is_a_protocol_error():
    conn = ServerConnection()
    conn.receive_data(begin(1, p.FILTER) + p.encode_params(1, PARAMS))
    with pytest.raises(p.ProtocolError):
        conn.receive_data(p.encode_record(p.DATA, 1, b"x"))


def test_authorizer_starts_after_params_and_takes_no_stdin():
    conn = ServerConnection()
    events = conn.receive_data(begin(1, p.AUTHORIZER) + p.encode_params(1, PARAMS))
    assert events == [RequestStarted(1, p.AUTHORIZER, False, STARTED_PARAMS)]
    # an empty STDIN (some servers send it anyway) is tolerated ...
    assert conn.receive_data(p.encode_record(p.STDIN, 1)) == []
    # ... a body is not (spec 6.3: an authorizer gets no FCGI_STDIN)
    with pytest.raises(p.ProtocolError):
        conn.receive_data(p.encode_record(p.STDIN, 1, b"body"))


def test_interleaved_requests_keep_their_streams_apart():
    conn = ServerConnection()
    data = (begin(1, keep_conn=True) + begin(2, keep_conn=True)
            + p.encode_record(p.PARAMS, 2, p.encode_pairs([(b"N", b"2")]))
            + p.encode_record(p.PARAMS, 1, p.encode_pairs([(b"N", b"1")]))
            + p.encode_record(p.PARAMS, 1) + p.encode_record(p.STDIN, 1, b"one")
            + p.encode_record(p.PARAMS, 2) + p.encode_record(p.STDIN, 2, b"two")
            + p.encode_record(p.STDIN, 2) + p.encode_record(p.STDIN, 1))
    assert conn.receive_data(data) == [
        RequestStarted(1, p.RESPONDER, True, [("N", "1")]), StdinReceived(1, b"one"),
        RequestStarted(2, p.RESPONDER, True, [("N", "2")]), StdinReceived(2, b"two"),
        StdinReceived(2, b""), StdinReceived(1, b"")]


def test_a_stream_cut_anywhere_gives_the_same_events():
    data = (p.encode_get_values([p.MPXS_CONNS]) + begin(1) + p.encode_params(1, PARAMS)
            + p.encode_record(p.STDIN, 1, b"abc") + p.encode_record(p.STDIN, 1))
    whole = ServerConnection().receive_data(data)
    for cut in range(len(data)):
        conn = ServerConnection()
        assert conn.receive_data(data[:cut]) + conn.receive_data(data[cut:]) == whole
