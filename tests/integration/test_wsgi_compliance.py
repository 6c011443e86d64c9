"""A `wsgiref.validate.validator`-wrapped app served by a real server process:
the validator asserts on anything in environ, wsgi.input, wsgi.errors,
start_response or the iterable handling that breaks PEP 3333."""

import pytest
from support import FcgiConnection

from wsgi_fcgi import client


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from support import WsgiFcgi
    proc = WsgiFcgi("protoapp:validated", tmp_path_factory.mktemp("validated"), "--threads", "2",
                    "--log-level", "debug", env={"PYTHONWARNINGS": "error"})
    yield proc
    proc.stop()


def request(server, method, target, body=b"", **kw):
    return client.request(server.address, method, target, body=body, **kw)


def test_validated_app_sees_a_compliant_server(server):
    body = b"line one\nline two\n" * 1000
    checks = [
        (request(server, "GET", "/plain?x=1"), 200, b""),
        (request(server, "POST", "/echo", body, headers=[("Content-Type", "text/plain")]), 200, body),
        (request(server, "POST", "/lines", b"a\nbb\nccc"), 200, b"2:2:a\nbb\nccc"),
        (request(server, "GET", "/write"), 200, b"written returned"),
        (request(server, "GET", "/empty"), 204, b""),
        (request(server, "GET", "/error"), 500, b"app error page"),
        (request(server, "GET", "/caf%C3%A9", headers=[("Cookie", "a=1"), ("Accept", "x/y")]), 200, b""),
        (request(server, "HEAD", "/head"), 200, b""),
        (request(server, "GET", "/https", extra_params=[("HTTPS", "on")]), 200, b""),
    ]
    for response, status, content in checks:
        assert (response.status, response.body) == (status, content)
    stream = request(server, "GET", "/stream")
    assert stream.body == b"".join(b"%d\n" % i for i in range(1000))
    file_response = request(server, "GET", "/file")
    assert file_response.body.startswith(b'"""Test apps')
    cookies = [v for k, v in request(server, "GET", "/").headers if k == "Set-Cookie"]
    assert cookies == ["a=1", "b=2"]
    log = server.log()
    assert "validated /lines" in log
    assert "AssertionError" not in log and "Warning" not in log, log


def test_validated_app_with_multiplexed_requests_and_stderr(server):
    with FcgiConnection(server.address) as conn:
        for request_id in range(1, 6):
            conn.send_request(request_id, "/echo", b"body %d" % request_id, method="POST")
        responses = conn.wait_ended(*range(1, 6))
    for request_id, response in responses.items():
        assert response.body == b"body %d" % request_id
        assert response.stderr == b"validated /echo\n"
    assert "AssertionError" not in server.log()
