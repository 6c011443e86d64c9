"""Micro-benchmarks of the sans-IO core and the WSGI adapter (pytest-benchmark).

    make bench-micro        # or: .venv/bin/python -m pytest benchmarks/micro --benchmark-enable

Under `make test` they run once each, as plain tests (--benchmark-disable).
"""

import pytest

from wsgi_fcgi import protocol as p
from wsgi_fcgi.client import cgi_params, encode_request
from wsgi_fcgi.connection import RequestStarted, ServerConnection
from wsgi_fcgi.environ import build_environ
from wsgi_fcgi.wsgi import base_environ, encode_head, run_app

HEADERS = [("Host", "127.0.0.1:8080"), ("User-Agent", "wrk"), ("Accept", "*/*"),
           ("Accept-Encoding", "gzip"), ("Cookie", "session=abc; theme=dark")]
PARAMS = cgi_params("GET", "/page?name=bench", headers=HEADERS)
#: PARAMS as a request carries them (latin-1 strings)
NATIVE_PARAMS = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in PARAMS]
REQUEST = encode_request(1, PARAMS, keep_conn=True)
BASE = base_environ()


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


class NullTransport:
    aborted = False

    def send(self, data, end, head=b""):
        out = p.encode_stream(p.STDOUT, 1, head + data)
        if end:
            out += p.encode_stdout_end(1)
        return True

    def send_stderr(self, data):
        pass

    def truncate(self):
        pass


def test_parse_request_records(benchmark):
    records = benchmark(lambda: p.RecordParser().feed(REQUEST))
    assert [r.type for r in records] == [p.BEGIN_REQUEST, p.PARAMS, p.PARAMS, p.STDIN]


def test_parse_request_in_small_chunks(benchmark):
    chunks = [REQUEST[i:i + 64] for i in range(0, len(REQUEST), 64)]

    def parse():
        parser = p.RecordParser()
        return [r for c in chunks for r in parser.feed(c)]
    assert len(benchmark(parse)) == 4


def test_decode_params(benchmark):
    block = p.encode_pairs(PARAMS)
    assert benchmark(p.decode_params, block) == NATIVE_PARAMS


def test_encode_params(benchmark):
    assert benchmark(p.encode_pairs, PARAMS)


def test_connection_request(benchmark):
    def one_request():
        conn = ServerConnection()
        return conn.receive_data(REQUEST)
    events = benchmark(one_request)
    assert type(events[0]) is RequestStarted


def test_build_environ(benchmark):
    environ = benchmark(build_environ, NATIVE_PARAMS, BASE, "")
    assert environ["PATH_INFO"] == "/page" and environ["HTTP_COOKIE"] == "session=abc; theme=dark"


def test_encode_head(benchmark):
    assert benchmark(encode_head, "200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                             ("Content-Length", "1234"), ("Set-Cookie", "a=1")])


def test_encode_large_stdout(benchmark):
    data = b"x" * (1 << 20)
    out = benchmark(p.encode_stream, p.STDOUT, 1, data)
    assert len(out) > len(data)


@pytest.mark.parametrize("app", [hello])
def test_whole_request_without_io(benchmark, app):
    """Records in -> environ -> app -> records out: the pure-Python cost of a request."""
    def one_request():
        conn = ServerConnection()
        event = conn.receive_data(REQUEST)[0]
        environ = build_environ(event.params, BASE, "")
        return run_app(app, environ, NullTransport())
    assert benchmark(one_request).status == "200 OK"
