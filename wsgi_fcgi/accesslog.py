"""The access log (`--access-log FILE`, `--access-log-format`) and log reopening (SIGUSR1).

The format is a Python format string over these atoms (`{status}`, `{duration_ms:.1f}`...):

    remote_addr  REMOTE_ADDR sent by the web server (the HTTP client)
    time         request end, common log format: 21/Nov/2026:23:01:02 +0000
    iso_time     request end, ISO 8601
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
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time

from .listeners import ConfigError

DEFAULT_FORMAT = ('{remote_addr} - - [{time}] "{method} {uri} {protocol}" {status} {bytes} '
                  '{duration_ms:.1f}ms pid={pid}')

access_log = logging.getLogger("wsgi_fcgi.access")

_ATOMS = dict(remote_addr="127.0.0.1", time="01/Jan/2026:00:00:00 +0000", iso_time="2026-01-01T00:00:00+00:00",
              method="GET", uri="/", path="/", query="", protocol="HTTP/1.1", status="200", bytes=0,
              duration=0.0, duration_ms=0.0, pid=1, request_id=1, host="", referer="", user_agent="")


def check_format(fmt: str) -> None:
    """Refuse an unknown atom or a bad format spec at start-up, not at the first request."""
    try:
        fmt.format(**_ATOMS)
    except KeyError as exc:
        raise ConfigError("--access-log-format: unknown atom {%s} (see the README for the list)"
                          % exc.args[0]) from None
    except (ValueError, IndexError) as exc:
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
        params = dict(request.params)
        env = request.environ or {}

        def param(name: bytes) -> str:
            value = params.get(name)
            return value.decode("latin-1") if value is not None else "-"

        now = time.time()
        local = time.localtime(now)
        duration = time.monotonic() - request.started
        status = (request.status or "-").split(" ", 1)[0]
        line = self.format.format(
            remote_addr=param(b"REMOTE_ADDR"), time=time.strftime("%d/%b/%Y:%H:%M:%S %z", local),
            iso_time=time.strftime("%Y-%m-%dT%H:%M:%S%z", local), method=param(b"REQUEST_METHOD"),
            uri=param(b"REQUEST_URI"), path=env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", ""),
            query=param(b"QUERY_STRING"), protocol=param(b"SERVER_PROTOCOL"), status=status,
            bytes=request.bytes_out, duration=duration, duration_ms=duration * 1000.0, pid=os.getpid(),
            request_id=request.request_id, host=param(b"HTTP_HOST"), referer=param(b"HTTP_REFERER"),
            user_agent=param(b"HTTP_USER_AGENT"))
        access_log.info(line)


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
