"""Test app for security tests: an app that tries to send what must not go out.

/header?case=NAME   start_response with a header (or status) carrying CR/LF/NUL:
                    value-crlf, value-lf, value-cr, value-nul, name-crlf, name-colon,
                    status-crlf, bytes-value
/secret             raises with a secret and the environment in the message
/secret-after       raises the same after the head and a first chunk are out
/ok                 "ok"
"""

import os
from urllib.parse import parse_qs

HEADER_CASES = {
    "value-crlf": ("200 OK", [("X-Test", "a\r\nInjected: yes")]),
    "value-lf": ("200 OK", [("X-Test", "a\nInjected: yes")]),
    "value-cr": ("200 OK", [("X-Test", "a\rInjected: yes")]),
    "value-nul": ("200 OK", [("X-Test", "a\0Injected: yes")]),
    "name-crlf": ("200 OK", [("Injected: yes\r\nX-Test", "a")]),
    "name-colon": ("200 OK", [("Injected: yes", "a")]),
    "status-crlf": ("200 OK\r\nInjected: yes", []),
    "bytes-value": ("200 OK", [("X-Test", b"a\r\nInjected: yes")]),
}


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/header":
        case = parse_qs(environ.get("QUERY_STRING", "")).get("case", [""])[0]
        status, headers = HEADER_CASES[case]
        start_response(status, headers)
        return [b"the body of a response that must not go out"]
    if path == "/secret":
        raise RuntimeError("password=%s path=%s env=%r" % (
            os.environ.get("HOSTILE_SECRET"), __file__, dict(os.environ)))
    if path == "/secret-after":
        def body():
            yield b"first chunk\n"
            raise RuntimeError("password=%s path=%s" % (os.environ.get("HOSTILE_SECRET"), __file__))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
