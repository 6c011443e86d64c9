"""The limits, each against a real `python -m wsgi_fcgi --no-master` process:
--max-params-size, --max-body-size, --max-connections, --read-timeout,
--keep-alive, --max-queue, and 500 slowloris connections."""

import socket
import threading
import time

from support import FcgiConnection, process_stats, wait_for

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p

MIB = 1 << 20


def post_params(body_length=None):
    return client.cgi_params("POST", "/", body_length=body_length)


def send_in_background(conn, chunks):
    """Send a large input from a thread, stopping quietly when the server closes."""
    def run():
        try:
            for chunk in chunks:
                conn.send(chunk)
        except OSError:
            pass
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def warm_stats(server):
    """The server's resources once it has served (threads start with the first request)."""
    assert_serves(server)
    return process_stats(server.pid)


def assert_serves(server, target="/"):
    response = client.request(server.address, "GET", target, timeout=10)
    assert response.status == 200, response


def test_params_larger_than_the_limit_get_431_and_a_close(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--max-params-size", "64K")
    rss_before = warm_stats(server)["rss_kib"]
    big_value = b"v" * 60000
    record = p.encode_record(p.PARAMS, 1, p.encode_pairs([(b"HTTP_X", big_value)]))
    with FcgiConnection(server.address) as conn:
        conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN))
        # 30 MiB of params: refused after the first 64 KiB, the rest only drained
        sender = send_in_background(conn, (record for _ in range(500)))
        response = conn.wait_ended(1)[1]
        assert response.status == 431
        try:
            conn.wait_eof()
        except ConnectionResetError:
            pass
        sender.join(10)
    assert process_stats(server.pid)["rss_kib"] < rss_before + 16 * 1024
    assert_serves(server)


def rss_growth_while_each_gets_431(server, count, send):
    """`send(conn)` on each of `count` new connections (a thread, or None),
    a 431 on each: how much the worker's resident memory grew, in KiB."""
    rss_before = warm_stats(server)["rss_kib"]
    conns = [FcgiConnection(server.address) for _ in range(count)]
    try:
        senders = [send(conn) for conn in conns]
        for conn in conns:
            assert conn.wait_ended(1)[1].status == 431
        for sender in senders:
            if sender is not None:
                sender.join(10)
        return process_stats(server.pid)["rss_kib"] - rss_before
    finally:
        for conn in conns:
            conn.close()


def test_params_cut_into_2_byte_records_hold_about_the_limit(start_wsgi_fcgi):
    # 8 connections, each sending 600 KB of params in 2-byte records (under
    # the 1 MiB limit by bytes).  Each record held a bytes object and a list
    # slot: 13 MiB a connection, 236 MiB for 8 sending 1 MiB.  A record now
    # counts as 64 bytes at least: each is refused (431) after 16,384.
    server = start_wsgi_fcgi("envapp:app", "--no-master")
    record = bytes((p.VERSION_1, p.PARAMS, 0, 1, 0, 2, 0, 0)) + b"\0\0"  # an empty pair, no padding

    def send(conn):
        conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN))
        return send_in_background(conn, [record * 300_000])

    grown = rss_growth_while_each_gets_431(server, 8, send)
    assert grown < 32 * 1024, "resident memory grew %d KiB" % grown
    assert_serves(server)


def test_params_of_half_a_million_empty_pairs_are_refused(start_wsgi_fcgi):
    # 1 MB of empty name-value pairs, under the 1 MiB limit by bytes, decoded
    # into 522,000 tuples: 36 MiB per request while it waited for its body.
    # A pair now counts 64 bytes: refused with 431.
    server = start_wsgi_fcgi("envapp:app", "--no-master")
    head = p.encode_pairs(post_params(body_length=10))
    blob = head + b"\0\0" * (((1 << 20) - 4096 - len(head)) // 2)

    def send(conn):
        conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN) + p.encode_stream(p.PARAMS, 1, blob)
                  + p.encode_record(p.PARAMS, 1))

    grown = rss_growth_while_each_gets_431(server, 4, send)
    assert grown < 32 * 1024, "resident memory grew %d KiB" % grown
    assert_serves(server)


def test_params_at_the_limit_are_accepted(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--max-params-size", "64K")
    response = client.request(server.address, "GET", "/", headers=[("X-Big", "b" * 60000)])
    assert response.status == 200 and b"b" * 60000 in response.body


def test_body_over_the_limit_with_content_length_is_refused_before_it_is_sent(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--max-body-size", "1M")
    with FcgiConnection(server.address) as conn:
        conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN) + p.encode_params(1, post_params(100 * MIB)))
        started = time.monotonic()
        response = conn.wait_ended(1)[1]
        assert response.status == 413 and time.monotonic() - started < 5
        # the body that follows anyway is dropped, and the connection serves on
        conn.send(p.encode_stream(p.STDIN, 1, b"x" * (2 * MIB)) + p.encode_record(p.STDIN, 1))
        conn.send_request(3, "/next", keep_conn=True)
        assert conn.wait_ended(3)[3].status == 200
    ok = client.request(server.address, "POST", "/", body=b"y" * MIB)
    assert ok.status == 200 and b'"body_length": 1048576' in ok.body


def test_chunked_body_without_content_length_over_the_limit_gets_413(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--max-body-size", "1M")
    rss_before = warm_stats(server)["rss_kib"]
    chunk = p.encode_stream(p.STDIN, 1, b"z" * 60000)
    with FcgiConnection(server.address) as conn:
        conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN) + p.encode_params(1, post_params(None)))
        sender = send_in_background(conn, (chunk for _ in range(500)))  # 30 MB, never ending
        response = conn.wait_ended(1)[1]
        assert response.status == 413
        sender.join(20)
    assert process_stats(server.pid)["rss_kib"] < rss_before + 16 * 1024
    assert_serves(server)


def test_connections_beyond_the_limit_wait_in_the_backlog(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--max-connections", "3")
    held = [FcgiConnection(server.address) for _ in range(3)]
    for index, conn in enumerate(held):  # make sure all three are accepted
        conn.send_request(1, "/held-%d" % index, keep_conn=True)
        conn.wait_ended(1)
    waiting = FcgiConnection(server.address, timeout=2)  # the kernel completes the handshake
    waiting.send_request(1, "/waiting", keep_conn=False)
    try:
        waiting.sock.recv(1)
        raise AssertionError("a fourth connection was served (or dropped) past --max-connections 3")
    except TimeoutError:
        pass  # waiting, neither accepted nor dropped
    held.pop().close()
    waiting.sock.settimeout(10)
    response = waiting.wait_ended(1)[1]
    assert response.status == 200 and b"/waiting" in response.body
    for conn in held + [waiting]:
        conn.close()


def test_a_peer_stalled_inside_a_record_is_dropped(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--read-timeout", "2")
    with FcgiConnection(server.address) as stalled:
        stalled.send(p.encode_begin_request(1)[:5])
        started = time.monotonic()
        assert_serves(server)  # others are served meanwhile
        stalled.wait_eof()
        assert 1.5 < time.monotonic() - started < 10


def test_an_idle_keep_alive_connection_is_closed(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--keep-alive", "2")
    with FcgiConnection(server.address) as conn:
        conn.send_request(1, "/", keep_conn=True)
        assert conn.wait_ended(1)[1].status == 200
        idle_since = time.monotonic()
        conn.wait_eof()
        assert 1.5 < time.monotonic() - idle_since < 10


def test_overload_answers_503_at_once_when_threads_and_queue_are_full(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--threads", "1", "--max-queue", "2")
    with FcgiConnection(server.address, timeout=20) as conn:
        conn.send_request(1, "/sleep?s=2", keep_conn=True)
        time.sleep(0.5)  # let the one thread take request 1
        conn.send_request(2, "/sleep?s=0.1", keep_conn=True)
        conn.send_request(3, "/sleep?s=0.1", keep_conn=True)
        started = time.monotonic()
        conn.send_request(4, "/sleep?s=0.1", keep_conn=True)
        refused = conn.wait_ended(4)[4]
        assert refused.status == 503 and time.monotonic() - started < 1.5
        served = conn.wait_ended(1, 2, 3)
        assert [served[i].status for i in (1, 2, 3)] == [200, 200, 200]
    assert "answering 503" in server.log()


def test_500_slowloris_connections_do_not_stop_normal_requests(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--read-timeout", "4", "--keep-alive", "60")
    baseline = warm_stats(server)
    stalled = []
    try:
        for index in range(500):
            sock = client.connect(server.address, timeout=5)
            # half a record: a header promising params that never come
            sock.sendall(p.encode_begin_request(index + 1)[:6] if index % 2
                         else p.encode_begin_request(1) + p.encode_record(p.PARAMS, 1, b"\x04\x10PATH")[:12])
            stalled.append(sock)
        wait_for(lambda: process_stats(server.pid)["fds"] >= baseline["fds"] + 450, 10,
                 what="the stalled connections to be accepted")
        for index in range(30):
            started = time.monotonic()
            response = client.request(server.address, "GET", "/normal-%d" % index, timeout=10)
            assert response.status == 200 and time.monotonic() - started < 3
        # past --read-timeout every stalled connection is dropped
        wait_for(lambda: process_stats(server.pid)["fds"] <= baseline["fds"] + 2, 20,
                 what="the stalled connections to be dropped")
        closed = 0
        for sock in stalled:
            sock.settimeout(5)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == 500
    finally:
        for sock in stalled:
            sock.close()
    assert process_stats(server.pid)["threads"] == baseline["threads"]


def test_a_peer_trickling_one_byte_at_a_time_is_dropped(start_wsgi_fcgi):
    """--read-timeout counts from a record's first byte, not from the last byte seen."""
    server = start_wsgi_fcgi("envapp:app", "--no-master", "--read-timeout", "2")
    record = p.encode_begin_request(1) + p.encode_record(p.PARAMS, 1, b"x" * 100)
    with FcgiConnection(server.address, timeout=0.5) as conn:
        started = time.monotonic()
        for byte in record:
            try:
                conn.send(bytes((byte,)))
                if conn.sock.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 8, "a trickling peer held the connection for %.1f s" % elapsed
    assert "incomplete after" in server.log()


def test_a_peer_that_floods_management_records_without_reading_stalls_no_one(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--no-master")
    flood = p.encode_get_values([p.MAX_CONNS]) * 20000
    conn = FcgiConnection(server.address)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender = send_in_background(conn, (flood for _ in range(50)))  # 24 MB, answers never read
    try:
        time.sleep(1)
        for index in range(5):
            started = time.monotonic()
            assert_serves(server, "/during-flood-%d" % index)
            assert time.monotonic() - started < 3
        wait_for(lambda: "does not read" in server.log(), 10, what="the flooding peer dropped")
    finally:
        conn.close()
        sender.join(10)


def test_many_unfinished_params_on_one_connection_share_one_limit(start_wsgi_fcgi):
    """60 request ids each with ~1 MB of never-ended params: not 60 MB buffered."""
    server = start_wsgi_fcgi("envapp:app", "--no-master")  # --max-params-size 1M
    rss_before = warm_stats(server)["rss_kib"]
    record = p.encode_pairs([(b"HTTP_X", b"v" * 60000)])
    with FcgiConnection(server.address) as conn:
        sender = send_in_background(conn, (p.encode_begin_request(rid) + p.encode_record(p.PARAMS, rid, record) * 16
                                           for rid in range(1, 61)))
        refused = conn.wait_ended(2)[2]  # the second request's params pass the shared 1 MiB
        assert refused.status == 431
        sender.join(10)
        assert process_stats(server.pid)["rss_kib"] < rss_before + 16 * 1024
    assert_serves(server)
