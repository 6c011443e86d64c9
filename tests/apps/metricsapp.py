"""Test app for the metrics and logs.

/status/NNN     answers status NNN ("NNN Test") with a short body
/sleep?s=S      sleeps S seconds, then 200
/body           reads the whole request body, answers its length
/print?text=T   print(T) and the same to sys.stderr and to fd 2 with os.write, then 200
/pid            the worker's pid
anything else   "hello"
"""

import os
import sys
import time
from urllib.parse import parse_qs


def _query(environ, name, default=""):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def _answer(start_response, status, text):
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/status/"):
        code = path.rsplit("/", 1)[1]
        return _answer(start_response, "%s Test" % code, "status %s" % code)
    if path == "/sleep":
        time.sleep(float(_query(environ, "s", "0.1")))
        return _answer(start_response, "200 OK", "slept")
    if path == "/body":
        return _answer(start_response, "200 OK", str(len(environ["wsgi.input"].read())))
    if path == "/print":
        text = _query(environ, "text")
        print("stdout: " + text)
        print("stderr: " + text, file=sys.stderr)
        os.write(2, ("fd2: " + text + "\n").encode())
        return _answer(start_response, "200 OK", "printed")
    if path == "/pid":
        return _answer(start_response, "200 OK", str(os.getpid()))
    return _answer(start_response, "200 OK", "hello")
