"""Test app: shows what the app received, and misbehaves on request.

GET/POST any path     JSON: the environ's str entries, body length and sha256
/raise                exception before start_response
/raise-after          exception after the first body chunk
/stream?n=N&size=S    N chunks of S bytes from a generator
/overlong             declares Content-Length 5, then yields "12345EXTRA" and "more"
/tail?s=S&file=F      "done" (Content-Length 4) from a generator that, after its last
                      chunk, sleeps S seconds and writes "tail ran" to F
/status/NNN           that status, empty body
/cookies              three Set-Cookie headers
/bad-header           a header value with a newline in it
/sleep?s=S            sleeps S seconds, then answers "slept"
/wait?s=S             sleeps S seconds, answers "peak N": the most /wait requests seen at once
/exit                 os._exit(1) in the request (kills the process)
/write                uses the write() callable
/stderr               writes a line to wsgi.errors
/gc/pause             collects, then turns the cyclic GC off (what follows leaves its cycles)
/gc/garbage           JSON: the unreachable objects since /gc/pause, by type; the GC is on again
/malloc/churn         JSON: page faults of this thread over 300 rounds of a 64 KiB POST's
                      allocations (three 64 KiB blocks, then their join, all freed)
"""

import gc
import hashlib
import json
import os
import resource
import threading
import time
from urllib.parse import parse_qs

_waits_lock = threading.Lock()
_waits = {"now": 0, "peak": 0}


def _wait(seconds):
    with _waits_lock:
        _waits["now"] += 1
        _waits["peak"] = max(_waits["peak"], _waits["now"])
    time.sleep(seconds)
    with _waits_lock:
        _waits["now"] -= 1
        return _waits["peak"]


def _query(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def _read_body(environ):
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        remaining = int(length)
        parts = []
        while remaining > 0:
            chunk = stream.read(min(remaining, 65536))
            if not chunk:
                break
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)
    if environ.get("wsgi.input_terminated"):  # no length, but the server ends the stream
        return stream.read()
    return b""  # PEP 3333: without CONTENT_LENGTH a server may block on a read


def _pause_gc():
    gc.collect()
    gc.disable()
    return {"paused": True}


def _garbage():
    """The objects only the cyclic GC could free, counted by type."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        kinds = {}
        for thing in gc.garbage:
            name = type(thing).__module__ + "." + type(thing).__qualname__
            kinds[name] = kinds.get(name, 0) + 1
        return kinds
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data, sort_keys=True).encode("utf-8")
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _overlong(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return iter([b"12345EXTRA", b"more"])


def _tail(environ, start_response):
    seconds, done = float(_query(environ, "s", "1")), _query(environ, "file", "")

    def body():
        yield b"done"
        time.sleep(seconds)  # after the last chunk, outside any finally
        with open(done, "w") as file:
            file.write("tail ran")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return body()


_LENGTH_VIEWS = {"/overlong": _overlong, "/tail": _tail}


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/raise":
        raise RuntimeError("boom before headers (secret-token-123)")
    if path == "/raise-after":
        def body():
            yield b"first chunk\n"
            raise RuntimeError("boom after headers")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()
    if path == "/stream":
        n, size = int(_query(environ, "n", "10")), int(_query(environ, "size", "1024"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n * size))])
        chunk = b"x" * size
        return (chunk for _ in range(n))
    if path in _LENGTH_VIEWS:
        return _LENGTH_VIEWS[path](environ, start_response)
    if path.startswith("/status/"):
        start_response(path[8:] + " Whatever", [])
        return []
    if path == "/cookies":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1; Path=/"),
                                  ("Set-Cookie", "b=2; Path=/"), ("Set-Cookie", "c=3; HttpOnly")])
        return [b"cookies"]
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        return [b"should not be sent"]
    if path == "/sleep":
        time.sleep(float(_query(environ, "s", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/wait":
        peak = _wait(float(_query(environ, "s", "0.01")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"peak %d" % peak]
    if path == "/exit":
        os._exit(1)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]
    if path == "/stderr":
        environ["wsgi.errors"].write("a line for the error log\n")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path in _JSON_VIEWS:
        return _json(start_response, _JSON_VIEWS[path]())
    body = _read_body(environ)
    shown = {k: v for k, v in environ.items() if isinstance(v, str)}
    shown["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    return _json(start_response, {"environ": shown, "body_length": len(body),
                                   "body_sha256": hashlib.sha256(body).hexdigest(),
                                   "multithread": environ["wsgi.multithread"],
                                   "multiprocess": environ["wsgi.multiprocess"],
                                   "pid": os.getpid(), "thread": threading.current_thread().name,
                                   "gc_frozen": gc.get_freeze_count()})


def _churn_faults(rounds=300):
    chunk = b"a" * 65536
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(rounds):
        parts = [chunk[1:] + b"x" for _ in range(3)]
        joined = b"".join(parts)
        del parts, joined
    return {"faults": resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults}


_JSON_VIEWS = {"/gc/pause": _pause_gc, "/gc/garbage": _garbage, "/malloc/churn": _churn_faults}


application = app
