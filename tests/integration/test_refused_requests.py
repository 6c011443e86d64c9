"""Requests the engine refuses itself (413, 503) still get an access log line
with the status the web server saw, and never reach the app."""

import socket
import time

from support import wait_for

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p


def access_lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_413_by_content_length_and_mid_body_are_logged(start_wsgi_fcgi, tmp_path):
    log = tmp_path / "access.log"
    server = start_wsgi_fcgi("envapp:app", "--max-body-size", "1000", "--access-log", str(log),
                             "--access-log-format", "{method} {uri} {status}")
    assert client.request(server.address, "POST", "/declared", body=b"x" * 5000).status == 413

    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # chunked: no length
        sock.sendall(p.encode_begin_request(1) + p.encode_params(1, client.cgi_params("POST", "/streamed")))
        sock.sendall(p.encode_record(p.STDIN, 1, b"y" * 800) + p.encode_record(p.STDIN, 1, b"y" * 800))
        assert client.read_response(sock, 1).status == 413

    lines = wait_for(lambda: len(access_lines(log)) >= 2 and access_lines(log), 10, what="two access lines")
    assert sorted(lines) == ["POST /declared 413", "POST /streamed 413"]


def test_overload_503_is_logged(start_wsgi_fcgi, tmp_path):
    log = tmp_path / "access.log"
    server = start_wsgi_fcgi("envapp:app", "--threads", "1", "--max-queue", "1", "--access-log", str(log),
                             "--access-log-format", "{uri} {status}")
    host, port = server.address.rsplit(":", 1)
    slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
    for sock in slow:  # one runs, one waits in the queue
        sock.sendall(client.encode_request(1, client.cgi_params("GET", "/sleep?s=1.5")))
    time.sleep(0.5)
    assert client.request(server.address, "GET", "/refused", timeout=10).status == 503
    for sock in slow:
        assert client.read_response(sock, 1).status == 200
        sock.close()
    lines = wait_for(lambda: len(access_lines(log)) >= 3 and access_lines(log), 10, what="three access lines")
    assert sorted(lines) == ["/refused 503", "/sleep?s=1.5 200", "/sleep?s=1.5 200"]


def test_the_engines_own_answers_to_head_are_the_head_alone(start_wsgi_fcgi):
    """RFC 3875 4.3.3: no body for HEAD, also when the engine answers (413
    before the environ is built, 504 after)."""
    server = start_wsgi_fcgi("protoapp:app", "--max-body-size", "10", "--request-timeout", "0.5")
    refused = client.request(server.address, "HEAD", "/big", body=b"x" * 100)
    assert refused.status == 413 and refused.body == b""
    assert int(dict(refused.headers)["Content-Length"]) > 0  # what a GET would have had
    timed_out = client.request(server.address, "HEAD", "/sleep?s=3")
    assert timed_out.status == 504 and timed_out.body == b""
    assert client.request(server.address, "GET", "/sleep?s=3").body != b""  # a GET still has its text
