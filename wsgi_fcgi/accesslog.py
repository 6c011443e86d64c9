"""The access log (`--access-log FILE`, `--access-log-format`) and log reopening (SIGUSR1).

`--access-log-format` is one of:

* `json`: one JSON object per line, every field encoded by `json.dumps`;
* a format with gunicorn's atoms, `%(h)s %(r)s %(s)s "%({user-agent}i)s"`,
  so that gunicorn formats carry over (see GUNICORN_ATOMS);
* a Python format string over these atoms (`{status}`, `{duration_ms:.1f}`...):

    remote_addr  REMOTE_ADDR sent by the web server (the HTTP client)
    time         request end, common log format: 21/Nov/2026:23:01:02 +0000
    iso_time     request end, RFC 3339: 2026-11-21T23:01:02.123+00:00
    method       REQUEST_METHOD
    uri          REQUEST_URI (path and query as the client sent them)
    path         SCRIPT_NAME + PATH_INFO as the app saw them (decoded)
    query        QUERY_STRING
    protocol     SERVER_PROTOCOL
    status       the response status code ("-" if the app gave none)
    bytes        bytes of FCGI_STDOUT content sent (CGI head and body)
    duration     seconds from the request's arrival to its end (float)
    duration_ms  the same in milliseconds (float)
    pid          the worker process id
    request_id   the FastCGI request id
    host         HTTP_HOST
    referer      HTTP_REFERER
    user_agent   HTTP_USER_AGENT

In the text formats every value from the request is escaped as nginx
escapes its own log: '"', '\\' and bytes below 0x20 or from 0x7f as \\xHH,
so that no peer can forge a line, break a quoted field or send terminal
escapes.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time

from .listeners import ConfigError
from .logs import rfc3339

DEFAULT_FORMAT = ('{remote_addr} - - [{time}] "{method} {uri} {protocol}" {status} {bytes} '
                  '{duration_ms:.1f}ms pid={pid}')
JSON_FORMAT = "json"

access_log = logging.getLogger("wsgi_fcgi.access")

_ESCAPES = {code: "\\x%02X" % code for code in [*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100)]}

#: gunicorn's atoms; besides: %({header}i) a request header, %({name}e) a
#: FastCGI param or environ variable, %({header}o) "-" (not kept)
GUNICORN_ATOMS = {
    "h": "remote_addr", "l": None, "u": "remote_user", "t": "bracketed_time", "r": "request_line",
    "m": "method", "U": "uri_path", "q": "query", "H": "protocol", "s": "status", "B": "bytes", "b": "bytes",
    "f": "referer", "a": "user_agent", "T": "seconds", "M": "milliseconds", "D": "microseconds",
    "L": "decimal_seconds", "p": "bracketed_pid",
}


def escape(value: str) -> str:
    """A FastCGI param or an environ entry (WSGI strings), escaped as nginx does."""
    return value.translate(_ESCAPES)


class Entry:
    """The values of one finished request."""

    def __init__(self, request) -> None:
        self.params = dict(request.params)
        self.environ = request.environ or {}
        self.request_id = request.request_id
        self.bytes = request.bytes_out
        self.status = (request.status or "-").split(" ", 1)[0]
        self.duration = time.monotonic() - request.started
        self.now = time.time()
        self.pid = os.getpid()

    def param(self, name: str) -> str:
        """Escaped, "-" when absent."""
        value = self.params.get(name)
        return "-" if value is None else escape(value)

    def atoms(self) -> dict:
        """The {atom} values: strings escaped, numbers as numbers."""
        env = self.environ
        return dict(
            remote_addr=self.param("REMOTE_ADDR"), time=time.strftime("%d/%b/%Y:%H:%M:%S %z",
                                                                      time.localtime(self.now)),
            iso_time=rfc3339(self.now), method=self.param("REQUEST_METHOD"), uri=self.param("REQUEST_URI"),
            path=escape(env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", "")), query=self.param("QUERY_STRING"),
            protocol=self.param("SERVER_PROTOCOL"), status=self.status, bytes=self.bytes,
            duration=self.duration, duration_ms=self.duration * 1000.0, pid=self.pid, request_id=self.request_id,
            host=self.param("HTTP_HOST"), referer=self.param("HTTP_REFERER"),
            user_agent=self.param("HTTP_USER_AGENT"))

    def json(self) -> str:
        def text(name: str):
            value = self.params.get(name)
            return None if value is None else value.encode("latin-1").decode("utf-8", "backslashreplace")

        env = self.environ
        return json.dumps({
            "time": rfc3339(self.now), "remote_addr": text("REMOTE_ADDR"), "method": text("REQUEST_METHOD"),
            "uri": text("REQUEST_URI"),
            "path": (env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", "")).encode("latin-1", "replace")
            .decode("utf-8", "backslashreplace"),
            "query": text("QUERY_STRING"), "protocol": text("SERVER_PROTOCOL"),
            "status": int(self.status) if self.status.isdigit() else None, "bytes": self.bytes,
            "duration_ms": round(self.duration * 1000.0, 3), "pid": self.pid, "request_id": self.request_id,
            "host": text("HTTP_HOST"), "referer": text("HTTP_REFERER"), "user_agent": text("HTTP_USER_AGENT"),
        })


class GunicornAtoms(dict):
    """`format % atoms` for gunicorn's %(h)s-style formats; unknown atoms raise KeyError."""

    def __init__(self, entry: Entry) -> None:
        super().__init__()
        self.entry = entry
        self.values = entry.atoms()

    def __missing__(self, key: str) -> str:
        entry = self.entry
        if key.startswith("{") and len(key) > 3 and key[-2] == "}" and key[-1] in "ieo":
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                return entry.param("HTTP_" + name.upper().replace("-", "_"))
            if kind == "e":
                value = entry.params.get(name)
                if value is None:
                    value = entry.environ.get(name)
                return escape(value) if isinstance(value, str) else "-"
            return "-"
        if key not in GUNICORN_ATOMS:
            raise KeyError(key)
        name = GUNICORN_ATOMS[key]
        if name is None:
            return "-"
        values = self.values
        if name in values:
            return values[name]
        duration = entry.duration
        return {
            "remote_user": lambda: entry.param("REMOTE_USER"),
            "bracketed_time": lambda: "[%s]" % values["time"],
            "request_line": lambda: "%s %s %s" % (values["method"], values["uri"], values["protocol"]),
            "uri_path": lambda: escape(entry.params.get("REQUEST_URI", "-").partition("?")[0]),
            "seconds": lambda: int(duration),
            "milliseconds": lambda: int(duration * 1000),
            "microseconds": lambda: int(duration * 1_000_000),
            "decimal_seconds": lambda: "%.6f" % duration,
            "bracketed_pid": lambda: "<%d>" % entry.pid,
        }[name]()


def is_gunicorn_format(fmt: str) -> bool:
    return "%(" in fmt


def render(fmt: str, entry: Entry) -> str:
    if fmt == JSON_FORMAT:
        return entry.json()
    if is_gunicorn_format(fmt):
        return fmt % GunicornAtoms(entry)
    return fmt.format_map(entry.atoms())


class _SampleRequest:
    params = [("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/?a=1"), ("REMOTE_ADDR", "127.0.0.1")]
    environ = {"SCRIPT_NAME": "", "PATH_INFO": "/"}
    request_id = 1
    bytes_out = 0
    status = "200 OK"
    started = 0.0


def check_format(fmt: str) -> None:
    """Refuse an unknown atom or a bad format spec at start-up, not at the first request."""
    try:
        render(fmt, Entry(_SampleRequest()))
    except KeyError as exc:
        atom = ("%%(%s)s" if is_gunicorn_format(fmt) else "{%s}") % exc.args[0]
        raise ConfigError("--access-log-format: unknown atom %s (see the README for the list)"
                          % atom) from None
    except (ValueError, IndexError, TypeError) as exc:
        raise ConfigError("--access-log-format: %s" % exc) from None


def configure(path: str) -> None:
    handler = (logging.StreamHandler(sys.stderr) if path == "-"
               else logging.handlers.WatchedFileHandler(path))
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers[:] = [handler]
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


class AccessLogger:
    """`on_request_end` hook writing one line per request."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt

    def __call__(self, request) -> None:
        access_log.info("%s", render(self.format, Entry(request)))


def reopen_log_files() -> None:
    """SIGUSR1: close every log file so the next line opens it again (after logrotate)."""
    for logger in (logging.getLogger(), access_log):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
