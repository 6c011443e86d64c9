"""Test app for the process manager (master, workers, watchdog).

/pid                  the worker's pid, as text
/sleep?s=S            sleeps S seconds in `sleeping_function` (time.sleep: C, not interruptible)
/spin?s=S             busy Python loop for S seconds in `spinning_function` (interruptible)
/exit                 os._exit(1): kills the worker
/finish?s=S&file=F    answers "finished early", calls finish_request, sleeps S s, then writes F
anything else         "hello"

With MASTERAPP_FAIL_IF=PATH in the environment, the import fails while PATH
exists (a deployment that broke after the pool started); with
MASTERAPP_IMPORT_SECONDS=S it takes S seconds (a large app loading).
"""

import os
import time
from urllib.parse import parse_qs

if os.path.exists(os.environ.get("MASTERAPP_FAIL_IF") or "/nonexistent"):
    raise RuntimeError("MASTERAPP_FAIL_IF exists: failing at import on purpose")
time.sleep(float(os.environ.get("MASTERAPP_IMPORT_SECONDS") or 0))


def _query(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def sleeping_function(seconds):
    time.sleep(seconds)


def spinning_function(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def _text(start_response, text, status="200 OK"):
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/pid":
        return _text(start_response, str(os.getpid()))
    if path == "/sleep":
        sleeping_function(float(_query(environ, "s", "1")))
        return _text(start_response, "slept")
    if path == "/spin":
        spinning_function(float(_query(environ, "s", "1")))
        return _text(start_response, "spun")
    if path == "/exit":
        os._exit(1)
    if path == "/finish":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"finished early")
        environ["wsgi_fcgi.finish_request"]()
        time.sleep(float(_query(environ, "s", "1")))
        write(b" - dropped")
        with open(_query(environ, "file", ""), "w") as f:
            f.write("slow work done")
        return [b" - dropped too"]
    return _text(start_response, "hello")


application = app
