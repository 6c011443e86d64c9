"""FastCGI protocol points against a real `python -m wsgi_fcgi` process, over
raw sockets: multiplexing, ABORT, KEEP_CONN, OVERLOADED, management records,
no head-of-line blocking, draining unread input, many idle connections."""

import socket
import struct
import time

import pytest
from support import FcgiConnection, wait_for

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from support import WsgiFcgi
    proc = WsgiFcgi("protoapp:app", tmp_path_factory.mktemp("raw"), "--threads", "4", "--max-queue", "100")
    yield proc
    proc.stop()


def connect(server):
    return FcgiConnection(server.address)


def params(target, **kw):
    return client.cgi_params("GET", target, **kw)


def test_get_values_answers_true_values(server):
    with connect(server) as conn:
        conn.send(p.encode_get_values([p.MAX_REQS, p.MPXS_CONNS, p.MAX_CONNS, b"FCGI_UNHEARD_OF"]))
        while not conn.records:
            assert conn.receive()
        record, = conn.records
        assert (record.type, record.request_id) == (p.GET_VALUES_RESULT, 0)
        # what one connection accepts: 100 live ids (the default per-connection
        # limit, below 4 threads + 100 queued); 1024 connections is the default
        assert p.decode_pairs(record.content) == [(p.MAX_REQS, b"100"), (p.MPXS_CONNS, b"1"), (p.MAX_CONNS, b"1024")]
        # the connection stays usable
        conn.send_request(1, "/after")
        assert conn.wait_ended(1)[1].body == b"ok /after"


def test_get_values_through_the_client_module(server):
    assert client.get_values(server.address) == {"FCGI_MAX_CONNS": "1024", "FCGI_MAX_REQS": "100",
                                                 "FCGI_MPXS_CONNS": "1"}


def test_unknown_management_type(server):
    with connect(server) as conn:
        conn.send(p.encode_record(42, 0, b"what is this"))
        while not conn.records:
            assert conn.receive()
        record, = conn.records
        assert record.type == p.UNKNOWN_TYPE and p.decode_unknown_type(record.content) == 42


def test_unknown_role(server):
    with connect(server) as conn:
        conn.send(p.encode_begin_request(7, 9, p.KEEP_CONN) + p.encode_params(7, params("/"))
                  + p.encode_record(p.STDIN, 7))
        response = conn.wait_ended(7)[7]
        assert response.protocol_status == p.UNKNOWN_ROLE
        assert not [r for r in conn.records if r.type == p.STDOUT]
        conn.send_request(8, "/next")
        assert conn.wait_ended(8)[8].body == b"ok /next"


def test_keep_conn_set_keeps_the_connection(server):
    with connect(server) as conn:
        for request_id in (1, 1, 2):
            conn.send_request(request_id, "/k%d" % request_id, keep_conn=True)
            assert conn.wait_ended(request_id)[request_id].body == b"ok /k%d" % request_id
            conn.records.clear()


def test_keep_conn_clear_closes_after_end_request(server):
    with connect(server) as conn:
        conn.send_request(1, "/once", keep_conn=False)
        response = conn.wait_ended(1)[1]
        assert (response.status, response.body, response.protocol_status) == (200, b"ok /once", p.REQUEST_COMPLETE)
        conn.wait_eof()
        assert conn.records[-1].type == p.END_REQUEST


def test_multiplexed_interleaved_requests_run_in_parallel(server):
    with connect(server) as conn:
        one, two = params("/sleep?s=1"), params("/sleep?s=1")
        started = time.monotonic()
        conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN)
                  + p.encode_begin_request(2, p.RESPONDER, p.KEEP_CONN)
                  + p.encode_record(p.PARAMS, 2, p.encode_pairs(two)) + p.encode_record(p.PARAMS, 2)
                  + p.encode_record(p.PARAMS, 1, p.encode_pairs(one)) + p.encode_record(p.PARAMS, 1)
                  + p.encode_record(p.STDIN, 2) + p.encode_record(p.STDIN, 1))
        responses = conn.wait_ended(1, 2)
        elapsed = time.monotonic() - started
        assert responses[1].body == responses[2].body == b"slept"
        assert elapsed < 1.8, "two 1 s requests on one connection took %.2f s" % elapsed


def test_many_multiplexed_requests_each_get_their_own_answer(server):
    with connect(server) as conn:
        ids = list(range(1, 21))
        conn.send(b"".join(client.encode_request(i, params("/r%d" % i), keep_conn=True) for i in ids))
        responses = conn.wait_ended(*ids)
        assert {i: r.body for i, r in responses.items()} == {i: b"ok /r%d" % i for i in ids}


def test_fcgi_max_reqs_requests_on_one_connection_are_all_answered(start_wsgi_fcgi):
    # HAProxy believes FCGI_MAX_REQS: as many requests at once on one
    # connection must all be served, none OVERLOADED or 503.
    proc = start_wsgi_fcgi("protoapp:app", "--threads", "4", "--max-queue", "40",
                           "--max-requests-per-connection", "100")
    with FcgiConnection(proc.address) as conn:
        conn.send(p.encode_get_values([p.MAX_REQS]))
        while not conn.records:
            assert conn.receive()
        max_reqs = int(dict(p.decode_pairs(conn.records[0].content))[p.MAX_REQS])
        assert max_reqs == 44  # 4 threads + 40 queued, below the 100 of the connection limit
        conn.records.clear()
        ids = list(range(1, max_reqs + 1))
        conn.send(b"".join(client.encode_request(i, params("/sleep?s=0.05&n=%d" % i), keep_conn=True)
                           for i in ids))
        responses = conn.wait_ended(*ids)
        assert all(r.protocol_status == p.REQUEST_COMPLETE for r in responses.values())
        assert sorted((r.status, r.body) for r in responses.values()) == [(200, b"slept")] * max_reqs


def test_abort_of_a_running_request(server):
    with connect(server) as conn:
        conn.send_request(1, "/slow-stream?n=200&id=abort-me")
        wait_for(lambda conn=conn: conn.receive() and any(r.type == p.STDOUT for r in conn.records), 10,
                 what="the first chunk")
        started = time.monotonic()
        conn.send(p.encode_record(p.ABORT_REQUEST, 1))
        response = conn.wait_ended(1)[1]
        assert time.monotonic() - started < 3
        assert response.protocol_status == p.REQUEST_COMPLETE
        assert b"chunk 0\n" in response.body and b"chunk 199" not in response.body
        wait_for(lambda: "closed abort-me" in server.log(), 5, what="the app's close()")
        # the connection carries on
        conn.send_request(2, "/after-abort")
        assert conn.wait_ended(2)[2].body == b"ok /after-abort"


def test_abort_before_params_end(server):
    with connect(server) as conn:
        conn.send(p.encode_begin_request(3, p.RESPONDER, p.KEEP_CONN) + p.encode_record(p.ABORT_REQUEST, 3))
        response = conn.wait_ended(3)[3]
        assert response.protocol_status == p.REQUEST_COMPLETE and response.body == b""


def test_overloaded_past_the_per_connection_limit(server):
    with connect(server) as conn:
        # 100 live ids (params still open) is the default limit per connection
        conn.send(b"".join(p.encode_begin_request(i, p.RESPONDER, p.KEEP_CONN) for i in range(1, 102)))
        response = conn.wait_ended(101)[101]
        assert response.protocol_status == p.OVERLOADED
        assert not any(conn.ended(i) for i in range(1, 101))
        # finishing one frees a slot
        conn.send(p.encode_params(1, params("/freed")) + p.encode_record(p.STDIN, 1))
        assert conn.wait_ended(1)[1].body == b"ok /freed"
        conn.records.clear()
        conn.send(client.encode_request(101, params("/now-fits"), keep_conn=True))
        assert conn.wait_ended(101)[101].body == b"ok /now-fits"


def test_no_head_of_line_blocking_behind_an_unread_body(server):
    big = b"B" * (8 << 20)
    with connect(server) as conn:
        conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN)
                  + p.encode_params(1, client.cgi_params("POST", "/sleep?s=4", body_length=len(big))))
        started = time.monotonic()
        conn.send(p.encode_stream(p.STDIN, 1, big) + p.encode_record(p.STDIN, 1))
        conn.send_request(2, "/quick")
        assert conn.wait_ended(2)[2].body == b"ok /quick"
        elapsed = time.monotonic() - started
        assert not conn.ended(1)
        assert elapsed < 3.5, "the second request waited %.1f s behind an unread body" % elapsed
        assert conn.wait_ended(1)[1].body == b"slept"


def test_unread_stdin_is_drained_before_close_no_reset(server):
    with connect(server) as conn:
        body_length = 4 << 20
        conn.send(p.encode_begin_request(1, p.RESPONDER, 0)
                  + p.encode_params(1, client.cgi_params("POST", "/no-read", body_length=body_length))
                  + p.encode_record(p.STDIN, 1, b"x" * 1000))
        assert conn.wait_ended(1)[1].body == b"did not read"
        conn.wait_eof()  # FIN from the server: KEEP_CONN was clear
        # the web server still sends the body it had started; the server must
        # read it rather than answer with a TCP reset
        chunk = p.encode_stream(p.STDIN, 1, b"y" * 65535)
        for _ in range(30):
            conn.send(chunk)
        conn.send(p.encode_record(p.STDIN, 1))
        time.sleep(0.3)
        assert conn.sock.recv(100) == b""  # raises ConnectionResetError on a reset


def test_protocol_error_closes_only_that_connection(server):
    with connect(server) as good:
        good.send_request(1, "/before")
        assert good.wait_ended(1)[1].body == b"ok /before"
        with connect(server) as bad:
            bad.send(b"\x07" + b"\0" * 15)
            bad.wait_eof()
        good.records.clear()
        good.send_request(1, "/after")
        assert good.wait_ended(1)[1].body == b"ok /after"
    assert "protocol error" in server.log()


GARBAGE = b"\x07" + b"\0" * 15


def test_a_request_before_garbage_in_the_same_write_is_answered(server):
    """The records before a protocol error are whole: their request is served,
    then the connection closes (FIN, not a reset, and nothing after it read)."""
    with connect(server) as conn:
        conn.send(client.encode_request(1, params("/first"), keep_conn=True) + GARBAGE
                  + client.encode_request(2, params("/never"), keep_conn=True))
        conn.wait_eof()
        assert conn.response(1).body == b"ok /first"
        assert not any(r.request_id == 2 for r in conn.records) and not conn.parser.mid_record
    wait_for(lambda: "once the requests whose input came whole are answered" in server.log(), 5,
             what="the protocol error's log line")


def test_garbage_while_requests_run_ends_the_complete_ones_and_refuses_the_rest(server):
    with connect(server) as conn:
        conn.send(client.encode_request(1, params("/sleep?s=0.5"), keep_conn=True))
        # request 2 has sent half of its body
        conn.send(p.encode_begin_request(2, p.RESPONDER, p.KEEP_CONN)
                  + p.encode_params(2, client.cgi_params("POST", "/read-body", body_length=1000))
                  + p.encode_record(p.STDIN, 2, b"x" * 500))
        time.sleep(0.1)
        started = time.monotonic()
        conn.send(GARBAGE)
        conn.wait_eof()
        assert conn.response(1).body == b"slept"  # waited for, not cut
        assert conn.response(2).status == 400
        assert time.monotonic() - started < 5


def test_64_idle_keep_alive_connections_with_4_threads(server):
    conns = [connect(server) for _ in range(64)]
    try:
        time.sleep(0.3)  # all idle and open at once
        for round_ in range(2):
            for index, conn in enumerate(conns):
                conn.records.clear()
                conn.send_request(1, "/c%d-%d" % (index, round_), keep_conn=True)
            for index, conn in enumerate(conns):
                assert conn.wait_ended(1)[1].body == b"ok /c%d-%d" % (index, round_)
    finally:
        for conn in conns:
            conn.close()


def test_peer_disconnecting_mid_response_costs_nothing(server):
    for _ in range(3):
        conn = connect(server)
        conn.send_request(1, "/slow-stream?n=100&id=vanished")
        wait_for(lambda conn=conn: conn.receive() and any(r.type == p.STDOUT for r in conn.records), 10,
                 what="the first chunk")
        # close with a reset, as a crashed web server would
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    wait_for(lambda: server.log().count("closed vanished") == 3, 10, what="close() of the vanished requests")
    response = client.request(server.address, "GET", "/still-fine")
    assert (response.status, response.body) == (200, b"ok /still-fine")
    assert "Traceback" not in server.log()


def test_a_burst_written_behind_arrives_while_the_app_waits(start_wsgi_fcgi, tmp_path):
    """Chunks yielded one after the other are written behind (queued for the
    loop thread); PEP 3333 asks that they go on being sent while the app
    produces its next block.  One thread: the request runs in a pool thread,
    where writing behind applies (the loop thread's own requests send at once)."""
    server = start_wsgi_fcgi("protoapp:app", "--threads", "1")
    until = tmp_path / "go"
    burst = b"".join(b"chunk %d\n" % n for n in range(500))
    conn = FcgiConnection(server.address, timeout=0.2)
    conn.send_request(1, "/burst?n=500&until=%s" % until)
    started = time.monotonic()

    def burst_arrived():
        try:
            conn.receive()
        except TimeoutError:
            pass
        return burst in b"".join(r.content for r in conn.records if r.type == p.STDOUT)
    wait_for(burst_arrived, 5, what="the burst, while the app waits")
    assert time.monotonic() - started < 5  # not when the app gave up waiting (10 s)
    until.touch()
    conn.sock.settimeout(15)
    assert conn.wait_ended(1)[1].body.endswith(burst + b"after\n")
    conn.close()


@pytest.mark.parametrize("how", ["abort", "disconnect"])
def test_client_gone_while_the_app_reads_its_body(server, how):
    """The request waits for the rest of its body (without a thread, or in
    wsgi.input.read() for a body past --spool-size): an ABORT or a vanished
    web server ends it, and it is no app error (no traceback)."""
    conn = connect(server)
    conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN)
              + p.encode_params(1, client.cgi_params("POST", "/read-body", body_length=1 << 20))
              + p.encode_record(p.STDIN, 1, b"only a little"))
    time.sleep(0.3)  # the request now waits for the rest
    if how == "abort":
        conn.send(p.encode_record(p.ABORT_REQUEST, 1))
        assert conn.wait_ended(1)[1].protocol_status == p.REQUEST_COMPLETE
        conn.records.clear()
        conn.send_request(2, "/after")
        assert conn.wait_ended(2)[2].body == b"ok /after"
    conn.close()
    assert get_ok(server)
    log = server.log()
    assert "Traceback" not in log, log[-3000:]


def get_ok(server):
    return client.request(server.address, "GET", "/ok").body == b"ok /ok"


def test_response_records_are_well_formed(tmp_path_factory):
    from support import WsgiFcgi
    proc = WsgiFcgi("envapp:app", tmp_path_factory.mktemp("records"), "--threads", "2")
    try:
        with FcgiConnection(proc.address) as conn:
            conn.send_request(1, "/stream?n=20&size=100000")  # 2 MB in 100 kB chunks
            response = conn.wait_ended(1)[1]
            assert len(response.body) == 2_000_000
            mine = [r for r in conn.records if r.request_id == 1]
            assert all(len(r.content) <= 65535 for r in mine)
            assert [r.type for r in mine[-2:]] == [p.STDOUT, p.END_REQUEST]
            assert mine[-2].content == b""  # the empty record that closes STDOUT
            assert [r for r in mine[:-2] if r.type == p.STDOUT and not r.content] == []
            assert p.decode_end_request(mine[-1].content) == p.EndRequest(0, p.REQUEST_COMPLETE)
            # a small response: one head+body record, the empty one, END_REQUEST
            conn.records.clear()
            conn.send_request(2, "/status/204")
            conn.wait_ended(2)
            assert [(r.type, bool(r.content)) for r in conn.records] == [
                (p.STDOUT, True), (p.STDOUT, False), (p.END_REQUEST, True)]
    finally:
        proc.stop()


def test_params_over_max_params_size_get_431(start_wsgi_fcgi):
    server = start_wsgi_fcgi("protoapp:app", "--max-params-size", "4K")
    with FcgiConnection(server.address) as conn:
        conn.send_request(1, "/big", headers=[("X-Big", "v" * 8000)])
        assert conn.wait_ended(1)[1].status == 431
        conn.wait_eof()
    assert client.request(server.address, "GET", "/small", headers=[("X-Small", "v" * 1000)]).body == b"ok /small"


def test_peer_stalled_inside_a_record_is_dropped_after_read_timeout(start_wsgi_fcgi):
    server = start_wsgi_fcgi("protoapp:app", "--read-timeout", "1")
    with FcgiConnection(server.address) as conn:
        conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN)[:5])  # half a header
        started = time.monotonic()
        conn.wait_eof()
        assert 0.9 < time.monotonic() - started < 6
    assert client.request(server.address, "GET", "/next").body == b"ok /next"


def test_idle_keep_alive_connection_is_closed_after_keep_alive(start_wsgi_fcgi):
    server = start_wsgi_fcgi("protoapp:app", "--keep-alive", "1")
    with FcgiConnection(server.address) as conn:
        conn.send_request(1, "/first")
        assert conn.wait_ended(1)[1].body == b"ok /first"
        started = time.monotonic()
        conn.wait_eof()
        assert 0.9 < time.monotonic() - started < 6


def test_abort_of_a_queued_request_never_runs_the_app(start_wsgi_fcgi):
    server = start_wsgi_fcgi("protoapp:app", "--threads", "2")
    with FcgiConnection(server.address) as conn:
        conn.send_request(1, "/sleep?s=1")
        conn.send_request(2, "/sleep?s=1")
        time.sleep(0.2)
        conn.send_request(3, "/slow-stream?n=5&id=queued")  # waits for a free thread
        time.sleep(0.2)
        conn.send(p.encode_record(p.ABORT_REQUEST, 3))
        responses = conn.wait_ended(1, 2, 3)
        assert responses[1].body == responses[2].body == b"slept"
        assert responses[3].body == b"" and responses[3].protocol_status == p.REQUEST_COMPLETE
    time.sleep(0.3)
    assert "closed queued" not in server.log()


def test_get_values_is_answered_while_a_request_runs(server):
    with connect(server) as conn:
        conn.send_request(1, "/sleep?s=1")
        time.sleep(0.1)
        conn.send(p.encode_get_values([p.MPXS_CONNS]))
        while not any(r.type == p.GET_VALUES_RESULT for r in conn.records):
            assert conn.receive()
        assert not conn.ended(1)
        assert conn.wait_ended(1)[1].body == b"slept"
