"""Malformed input over raw sockets against a real `python -m wsgi_fcgi`.

Each case is sent on its own connection.  The server either ignores what
the spec lets it ignore (and then serves a valid request on the same
connection), or closes that one connection.  After every case it answers a
normal request on a new connection, and its memory, threads and open file
descriptors stay bounded.
"""

import os
import socket

import pytest
from support import FcgiConnection, WsgiFcgi, process_stats, read_until_eof, wait_for

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p

MIB = 1 << 20
#: How much resident memory one bad connection may cost while it lasts.
RSS_SLACK_KIB = 48 * 1024


def header(rtype, request_id, length, version=1, padding=0):
    return bytes((version, rtype, request_id >> 8, request_id & 0xFF, length >> 8, length & 0xFF, padding, 0))


BEGIN = p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN)
GET = client.cgi_params("GET", "/")

#: name -> bytes that make the server close the connection
CLOSING = {
    "wrong-version-0": header(p.BEGIN_REQUEST, 1, 8, version=0) + b"\0\1\1\0\0\0\0\0",
    "wrong-version-2": header(p.BEGIN_REQUEST, 1, 8, version=2) + b"\0\1\1\0\0\0\0\0",
    "wrong-version-after-a-good-record": BEGIN + header(p.PARAMS, 1, 0, version=9),
    "begin-request-body-too-short": header(p.BEGIN_REQUEST, 1, 3) + b"\0\1\1",
    "begin-request-body-too-long": header(p.BEGIN_REQUEST, 1, 16) + b"\0\1\1" + b"\0" * 13,
    "second-begin-for-a-live-id": BEGIN + BEGIN,
    "second-begin-while-params-complete": BEGIN + p.encode_params(1, GET) + BEGIN,
    "stdin-before-params-end": BEGIN + p.encode_record(p.STDIN, 1, b"early"),
    "params-after-params-end": BEGIN + p.encode_params(1, GET) + p.encode_record(p.PARAMS, 1, b"\1\1ab"),
    "stdin-after-stdin-end": BEGIN + p.encode_params(1, client.cgi_params("GET", "/sleep?s=1"))
    + p.encode_record(p.STDIN, 1) + p.encode_record(p.STDIN, 1, b"late"),
    "data-for-a-responder": BEGIN + p.encode_params(1, GET) + p.encode_record(p.DATA, 1, b"x"),
    "huge-name-length": BEGIN + p.encode_record(p.PARAMS, 1, b"\xff\xff\xff\xff\x01abc") + p.encode_record(p.PARAMS, 1),
    "huge-value-length": BEGIN + p.encode_record(p.PARAMS, 1, b"\x01\xff\xff\xff\xf0a") + p.encode_record(p.PARAMS, 1),
    "name-length-truncated": BEGIN + p.encode_record(p.PARAMS, 1, b"\x80\x00") + p.encode_record(p.PARAMS, 1),
    "get-values-huge-length": p.encode_record(p.GET_VALUES, 0, b"\x80\0\0\x10\x05abc"),
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + os.urandom(64),
}

#: name -> an HTTP request sent straight to the FastCGI address (a browser,
#: curl, nginx's proxy_pass): answered with a 400 that says why, then closed
HTTP_REQUESTS = {
    "get": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "post-with-a-body": b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % (4 * MIB)
    + b"x" * (4 * MIB),
}

#: name -> bytes the spec lets the server ignore or answer itself; the
#: connection stays usable for a valid request with id 1
IGNORED = {
    "stdin-before-begin": p.encode_record(p.STDIN, 1, b"body") + p.encode_record(p.STDIN, 1),
    "params-for-an-unknown-id": p.encode_record(p.PARAMS, 4711, p.encode_pairs(GET)),
    "abort-for-an-unknown-id": p.encode_record(p.ABORT_REQUEST, 0xFFFF),
    "data-for-an-unknown-id": p.encode_record(p.DATA, 2, b"x" * 1000),
    "end-request-from-the-peer": p.encode_end_request(1),
    "stdout-from-the-peer": p.encode_record(p.STDOUT, 1, b"Status: 200\r\n\r\n"),
    "unknown-application-type": p.encode_record(200, 1, b"x" * 100),
    "unknown-management-type": p.encode_record(200, 0, b"x" * 100),
    "get-values-result-from-the-peer": p.encode_get_values_result([(p.MAX_REQS, b"1")]),
    "begin-with-request-id-zero": p.encode_begin_request(0),
    "unknown-role": p.encode_begin_request(7, role=99) + p.encode_params(7, GET),
    "maximum-padding": p.encode_record(p.STDIN, 9)[:6] + b"\xff\0" + b"\0" * 255,
    "empty-get-values": p.encode_get_values([]),
}

#: name -> bytes after which the client closes (or half-closes) mid-record
TRUNCATED = {
    "half-a-header": BEGIN[:4],
    "header-only": BEGIN[:8],
    "length-past-the-end": header(p.PARAMS, 1, 0xFFFF) + b"short",
    "params-cut-mid-stream": BEGIN + p.encode_params(1, GET)[:50],
    "body-cut-mid-record": BEGIN + p.encode_params(1, client.cgi_params("POST", "/", body_length=100000))
    + p.encode_record(p.STDIN, 1, b"x" * 1000)[:500],
    "padding-missing": BEGIN + header(p.STDIN, 1, 0, padding=7),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = WsgiFcgi("envapp:app", tmp_path_factory.mktemp("malformed"), "--no-master", "--threads", "4")
    assert client.request(proc.address, "GET", "/").status == 200
    proc.baseline = process_stats(proc.pid)
    yield proc
    proc.stop()


def send_tolerating_reset(conn, data):
    """The server may close as soon as it sees the first bad header."""
    try:
        conn.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def read_to_eof(conn):
    try:
        conn.wait_eof()
    except ConnectionResetError:
        conn.eof = True  # closed with our unread input still queued: a reset


def assert_healthy(server):
    response = client.request(server.address, "POST", "/after", body=b"still here", timeout=10)
    assert response.status == 200 and response.body.startswith(b"{"), response
    stats = process_stats(server.pid)
    assert stats["rss_kib"] < server.baseline["rss_kib"] + RSS_SLACK_KIB, stats
    # threads: the pool only (no thread per connection, none leaked)
    assert stats["threads"] == server.baseline["threads"], stats
    assert server.proc.poll() is None


def wait_fds_back(server):
    wait_for(lambda: process_stats(server.pid)["fds"] <= server.baseline["fds"] + 1, 10,
             what="the server's file descriptors back to %d" % server.baseline["fds"])


@pytest.mark.parametrize("name", sorted(CLOSING))
def test_invalid_input_closes_the_connection(server, name):
    with FcgiConnection(server.address, timeout=10) as conn:
        send_tolerating_reset(conn, CLOSING[name])
        read_to_eof(conn)
        assert conn.eof
        # nothing but whole, valid records came back before the close
        assert not conn.parser.mid_record
        assert all(r.type in (p.STDOUT, p.STDERR, p.END_REQUEST) for r in conn.records), conn.records
    assert_healthy(server)


def http_exchange(server, request: bytes, trickle: bool = False) -> bytes:
    """What the server answers `request` with, up to its close."""
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        if trickle:
            for byte in request:
                sock.send(bytes([byte]))
        else:
            sock.sendall(request)
        return read_until_eof(sock)


@pytest.mark.parametrize("name", sorted(HTTP_REQUESTS))
def test_an_http_request_gets_a_400_that_says_why(server, name):
    answer = http_exchange(server, HTTP_REQUESTS[name])
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert answer.endswith(b"\r\n\r\nThis address serves FastCGI to a web server, not HTTP.\n"), answer
    wait_for(lambda: "not FastCGI but an HTTP request" in server.log(), 5, what="the log line")
    assert "nginx: fastcgi_pass, not proxy_pass" in server.log()
    assert_healthy(server)
    wait_fds_back(server)


def test_an_http_request_trickled_a_byte_at_a_time_is_recognised(server):
    answer = http_exchange(server, HTTP_REQUESTS["get"], trickle=True)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert_healthy(server)


def test_an_http_request_after_fastcgi_on_the_same_connection_is_only_closed(server):
    with FcgiConnection(server.address, timeout=10) as conn:
        conn.send_request(1, "/first", keep_conn=True)
        assert conn.wait_ended(1)[1].status == 200
        send_tolerating_reset(conn, HTTP_REQUESTS["get"])
        read_to_eof(conn)
        assert conn.eof and all(r.type in (p.STDOUT, p.END_REQUEST) for r in conn.records), conn.records
    assert_healthy(server)


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_ignorable_input_leaves_the_connection_usable(server, name):
    with FcgiConnection(server.address, timeout=10) as conn:
        conn.send(IGNORED[name])
        conn.send_request(1, "/same-connection", keep_conn=True)
        response = conn.wait_ended(1)[1]
        assert response.status == 200 and b"/same-connection" in response.body
        for record in conn.records:
            if record.type == p.UNKNOWN_TYPE:
                assert p.decode_unknown_type(record.content) in (200, p.GET_VALUES_RESULT, p.BEGIN_REQUEST)
            elif record.type == p.END_REQUEST and record.request_id == 7:
                assert p.decode_end_request(record.content).protocol_status == p.UNKNOWN_ROLE
    assert_healthy(server)


@pytest.mark.parametrize("name", sorted(TRUNCATED))
@pytest.mark.parametrize("how", ["half-close", "close"])
def test_truncated_record_then_close(server, name, how):
    conn = FcgiConnection(server.address, timeout=10)
    conn.send(TRUNCATED[name])
    if how == "close":
        conn.close()
    else:
        conn.sock.shutdown(socket.SHUT_WR)
        read_to_eof(conn)
        assert conn.eof and not conn.parser.mid_record
        conn.close()
    assert_healthy(server)
    wait_fds_back(server)


@pytest.mark.parametrize("prefix", [b"", BEGIN + p.encode_params(1, GET)], ids=["bare", "after-a-request"])
def test_ten_mib_of_random_bytes(server, prefix):
    data = prefix + os.urandom(10 * MIB)
    with FcgiConnection(server.address, timeout=20) as conn:
        send_tolerating_reset(conn, data)
        read_to_eof(conn)
        assert conn.eof
    assert_healthy(server)


def test_every_case_repeated_leaks_nothing(server):
    """Run every bad case 15 times over: memory, threads and fds come back."""
    def one_round():
        for data in CLOSING.values():
            with FcgiConnection(server.address, timeout=10) as conn:
                send_tolerating_reset(conn, data)
                read_to_eof(conn)
        for data in HTTP_REQUESTS.values():
            http_exchange(server, data)
        for data in TRUNCATED.values():
            conn = FcgiConnection(server.address, timeout=10)
            conn.send(data)
            conn.close()

    one_round()
    assert_healthy(server)
    after_first = process_stats(server.pid)["rss_kib"]
    for _ in range(15):
        one_round()
    assert_healthy(server)
    wait_fds_back(server)
    grown = process_stats(server.pid)["rss_kib"] - after_first
    assert grown < 8 * 1024, "resident memory grew %d KiB over 15 rounds" % grown
    print("malformed cases tried: %d" % (16 * (len(CLOSING) + len(HTTP_REQUESTS) + len(TRUNCATED))))
