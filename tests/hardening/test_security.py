"""Security: peer allow-lists, unix socket permissions, the exposure warning,
no secrets or tracebacks in response bodies, no response header injection."""

import logging
import os
import socket
import stat
import time

import pytest
import requests
from support import FcgiConnection, fastcgi_location, free_port, wait_for

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p
from wsgi_fcgi.listeners import PeerFilter, warn_if_exposed

SECRET = "hunter2-s3cr3t-value"
LEAK_MARKERS = [SECRET, "Traceback", "RuntimeError", "hostileapp", ".py", "/work/", "HOSTILE_SECRET", "password="]


def refused_before_any_byte(address):
    """Connect and send nothing: an unlisted peer is closed at once, unread."""
    with FcgiConnection(address, timeout=5) as conn:
        started = time.monotonic()
        try:
            conn.wait_eof()
        except ConnectionResetError:
            pass
        assert conn.records == [] and time.monotonic() - started < 4


@pytest.mark.parametrize("how", ["option", "environment"])
def test_peers_not_in_the_allow_list_are_refused_before_a_byte_is_read(start_wsgi_fcgi, how):
    if how == "option":
        server = start_wsgi_fcgi("envapp:app", "--allowed-servers", "10.9.8.7,192.0.2.0/24")
    else:
        server = start_wsgi_fcgi("envapp:app", env={"FCGI_WEB_SERVER_ADDRS": "10.9.8.7,192.0.2.1"})
    refused_before_any_byte(server.address)
    with FcgiConnection(server.address, timeout=5) as conn:
        try:
            conn.send_request(1, "/")
            conn.wait_eof()
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert not any(r.type == p.STDOUT for r in conn.records)
    wait_for(lambda: "refused a connection from 127.0.0.1" in server.log(), 5, what="the refusal in the log")
    assert "GET /" not in server.log()


@pytest.mark.parametrize("allowed", ["127.0.0.1", "127.0.0.0/8", "10.0.0.1, 127.0.0.1"])
def test_listed_peers_are_served(start_wsgi_fcgi, allowed):
    server = start_wsgi_fcgi("envapp:app", env={"FCGI_WEB_SERVER_ADDRS": allowed})
    assert client.request(server.address, "GET", "/").status == 200


def test_the_option_overrides_the_environment(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--allowed-servers", "127.0.0.1",
                             env={"FCGI_WEB_SERVER_ADDRS": "10.9.8.7"})
    assert client.request(server.address, "GET", "/").status == 200


def test_unix_socket_is_0660_by_default(start_wsgi_fcgi, tmp_path):
    path = tmp_path / "app.sock"
    server = start_wsgi_fcgi("envapp:app", address="unix:%s" % path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert client.request(server.address, "GET", "/").status == 200


def test_unix_socket_mode_option(start_wsgi_fcgi, tmp_path):
    path = tmp_path / "private.sock"
    start_wsgi_fcgi("envapp:app", "--socket-mode", "0600", address="unix:%s" % path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_exposure_warning_function(caplog):
    exposed = socket.socket()
    local = socket.socket()
    try:
        exposed.bind(("0.0.0.0", 0))
        local.bind(("127.0.0.1", 0))
        with caplog.at_level(logging.WARNING, logger="wsgi_fcgi"):
            warn_if_exposed([local], PeerFilter(None))
            assert not caplog.records
            warn_if_exposed([exposed], PeerFilter(["127.0.0.1"]))
            assert not caplog.records
            warn_if_exposed([exposed], PeerFilter(None))
        assert "without --allowed-servers" in caplog.text
    finally:
        exposed.close()
        local.close()


def test_binding_all_addresses_without_an_allow_list_logs_a_warning(start_wsgi_fcgi):
    # 0.0.0.0 on a free port: nothing outside connects to it during the test
    server = start_wsgi_fcgi("envapp:app", address="0.0.0.0:%d" % free_port("0.0.0.0"), wait=False)
    wait_for(lambda: "without --allowed-servers" in server.log() or server.proc.poll() is not None, 20,
             what="the exposure warning")
    assert "without --allowed-servers" in server.log()
    quiet = start_wsgi_fcgi("envapp:app")
    assert client.request(quiet.address, "GET", "/").status == 200
    assert "without --allowed-servers" not in quiet.log()


def assert_no_leak(data: bytes):
    text = data.decode("latin-1")
    for marker in LEAK_MARKERS:
        assert marker not in text, "%r leaked into the response: %r" % (marker, text[:500])


@pytest.fixture
def hostile(start_wsgi_fcgi):
    return start_wsgi_fcgi("hostileapp:app", env={"HOSTILE_SECRET": SECRET})


def test_app_exception_leaks_no_secret_path_or_environment(hostile):
    with FcgiConnection(hostile.address) as conn:
        conn.send_request(1, "/secret", keep_conn=False)
        response = conn.wait_ended(1)[1]
        assert response.status == 500
        stdout = b"".join(r.content for r in conn.records if r.type == p.STDOUT)
        assert_no_leak(stdout)
    # Raising after the head: the response is cut (no FCGI_END_REQUEST, the
    # connection closes), and what did go out leaks nothing either.
    with FcgiConnection(hostile.address) as conn:
        conn.send_request(1, "/secret-after")
        while conn.receive():
            pass
        assert not conn.ended(1)
        stdout = b"".join(r.content for r in conn.records if r.type == p.STDOUT)
        assert stdout.endswith(b"first chunk\n")
        assert_no_leak(stdout)
    # the details are in the server's own log, where the operator looks
    wait_for(lambda: SECRET in hostile.log(), 5, what="the exception in the server log")


def test_no_leak_through_nginx(hostile, start_nginx):
    nginx = start_nginx(fastcgi_location(hostile.address))
    for path in ("/secret", "/secret-after", "/header?case=value-crlf"):
        try:
            r = requests.get(nginx.url + path, timeout=10)
        except requests.exceptions.ChunkedEncodingError:
            continue  # a response cut after its head: nothing more to see
        assert_no_leak(r.content + str(r.headers).encode())


@pytest.mark.parametrize("case", ["value-crlf", "value-lf", "value-cr", "value-nul", "name-crlf", "name-colon",
                                  "status-crlf", "bytes-value"])
def test_response_header_injection_is_refused(hostile, case):
    response = client.request(hostile.address, "GET", "/header?case=" + case)
    assert response.status == 500
    assert response.header("Injected") is None and response.header("X-Test") is None
    assert b"must not go out" not in response.body
    assert_no_leak(response.body)


def test_header_injection_through_nginx(hostile, start_nginx):
    nginx = start_nginx(fastcgi_location(hostile.address))
    r = requests.get(nginx.url + "/header?case=value-crlf", timeout=10)
    assert r.status_code == 500 and "Injected" not in r.headers and "X-Test" not in r.headers
    assert requests.get(nginx.url + "/ok", timeout=10).text == "ok"
