"""Test apps for protocol, role and CLI tests.

app (RESPONDER, AUTHORIZER and FILTER in one):
  /slow-stream?n=N&id=X  N chunks, 50 ms apart; close() prints "closed X" to stderr
  /burst?n=N&until=F     N small chunks at once, then, once file F exists (at most 10 s later), "after"
  /heartbeat?id=X         the head, then an empty chunk every 20 ms for at most 30 s; close() prints
                         "closed X" to stderr
  /no-read               answers at once without reading its body
  /read-body             reads CONTENT_LENGTH bytes of body, answers how many it got
  /sleep?s=S             sleeps S seconds without reading its body
  /authorize             (or any path with FCGI_ROLE=AUTHORIZER) 200 with Variable-* headers if HTTP_AUTHORIZATION
                         is "Bearer good", else 403
  /filter                FILTER: answers "<stdin>|<FCGI_DATA upper-cased>"
  anything else          "ok <PATH_INFO>"
validated                 a PEP 3333 app exercising the server (body reads of every
                          kind, write(), streaming, file_wrapper, errors, empty
                          bodies) wrapped in wsgiref.validate.validator
create_app(greeting)      a factory: answers greeting
"""

import os
import sys
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator


def _query(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


class SlowStream:
    def __init__(self, n, ident):
        self.n = n
        self.ident = ident

    def __iter__(self):
        for index in range(self.n):
            time.sleep(0.05)
            yield b"chunk %d\n" % index

    def close(self):
        print("closed %s" % self.ident, file=sys.stderr, flush=True)


class Heartbeat(SlowStream):
    def __iter__(self):
        yield b"start\n"
        for _ in range(1500):
            time.sleep(0.02)
            yield b""


def _burst(count, until):
    for index in range(count):
        yield b"chunk %d\n" % index
    deadline = time.monotonic() + 10
    while not os.path.exists(until) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield b"after\n"


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/burst":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _burst(int(_query(environ, "n", "100")), _query(environ, "until", ""))
    if path == "/heartbeat":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Heartbeat(0, _query(environ, "id", "-"))
    if path == "/slow-stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return SlowStream(int(_query(environ, "n", "100")), _query(environ, "id", "-"))
    if path == "/read-body":
        data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read %d" % len(data)]
    if path == "/no-read":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"did not read"]
    if path == "/sleep":
        time.sleep(float(_query(environ, "s", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/authorize" or environ.get("FCGI_ROLE") == "AUTHORIZER":
        if environ.get("HTTP_AUTHORIZATION") == "Bearer good":
            start_response("200 OK", [("Variable-REMOTE_USER", "alice"), ("Variable-ROLE", "admin")])
        else:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"go away"]
        return []
    if path == "/filter":
        stdin = environ["wsgi.input"].read()
        data = environ["wsgi_fcgi.data"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [stdin + b"|" + data.upper()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("ok " + path).encode("latin-1")]


def _compliant(environ, start_response):
    """Uses only what PEP 3333 promises, so the validator checks the server."""
    path = environ["PATH_INFO"]
    stream = environ["wsgi.input"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if path == "/lines":
        first = stream.readline()
        rest = stream.readlines()
        body = b"%d:%d:" % (len(first), len(rest)) + first + b"".join(rest)
    else:
        body = stream.read(length)
    environ["wsgi.errors"].write("validated %s\n" % path)
    environ["wsgi.errors"].flush()
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"%d\n" % i for i in range(1000))
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"), 4096)
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/error":
        try:
            raise ValueError("handled by the app")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"app error page"]
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body))),
                              ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    return [body]


validated = validator(_compliant)


def create_app(greeting="hello"):
    def greeter(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [greeting.encode("utf-8")]
    return greeter
