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
import os
import string
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

    def __init__(self, request, pid: int | None = None) -> None:
        self.params = dict(request.params)
        self.environ = request.environ or {}
        self.request_id = request.request_id
        self.bytes = request.bytes_out
        self.status = (request.status or "-").split(" ", 1)[0]
        self.duration = time.monotonic() - request.started
        self.now = time.time()
        self.pid = os.getpid() if pid is None else pid

    def param(self, name: str) -> str:
        """Escaped, "-" when absent."""
        value = self.params.get(name)
        return "-" if value is None else escape(value)

    def atoms(self, names=None) -> dict:
        """The {atom} values (`names`, or all): strings escaped, numbers as numbers."""
        return {name: _ATOMS[name](self) for name in (names if names is not None else _ATOMS)}

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


_last_second = [(-1, "")]  # (second, its common log time): one tuple, swapped whole by any thread


def _common_log_time(now: float) -> str:
    """21/Nov/2026:23:01:02 +0000, formatted once a second."""
    second = int(now)
    cached = _last_second[0]
    if cached[0] != second:
        cached = (second, time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second)))
        _last_second[0] = cached
    return cached[1]


def _path(entry: Entry) -> str:
    env = entry.environ
    return escape(env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", ""))


#: How each {atom} is computed: only those a format names are, per line.
_ATOMS = {
    "remote_addr": lambda e: e.param("REMOTE_ADDR"),
    "time": lambda e: _common_log_time(e.now),
    "iso_time": lambda e: rfc3339(e.now),
    "method": lambda e: e.param("REQUEST_METHOD"),
    "uri": lambda e: e.param("REQUEST_URI"),
    "path": _path,
    "query": lambda e: e.param("QUERY_STRING"),
    "protocol": lambda e: e.param("SERVER_PROTOCOL"),
    "status": lambda e: e.status,
    "bytes": lambda e: e.bytes,
    "duration": lambda e: e.duration,
    "duration_ms": lambda e: e.duration * 1000.0,
    "pid": lambda e: e.pid,
    "request_id": lambda e: e.request_id,
    "host": lambda e: e.param("HTTP_HOST"),
    "referer": lambda e: e.param("HTTP_REFERER"),
    "user_agent": lambda e: e.param("HTTP_USER_AGENT"),
}


class GunicornAtoms(dict):
    """`format % atoms` for gunicorn's %(h)s-style formats; unknown atoms raise KeyError."""

    def __init__(self, entry: Entry) -> None:
        super().__init__()
        self.entry = entry

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
        if name in _ATOMS:
            return _ATOMS[name](entry)
        duration = entry.duration
        return {
            "remote_user": lambda: entry.param("REMOTE_USER"),
            "bracketed_time": lambda: "[%s]" % _common_log_time(entry.now),
            "request_line": lambda: "%s %s %s" % (entry.param("REQUEST_METHOD"), entry.param("REQUEST_URI"),
                                                  entry.param("SERVER_PROTOCOL")),
            "uri_path": lambda: escape(entry.params.get("REQUEST_URI", "-").partition("?")[0]),
            "seconds": lambda: int(duration),
            "milliseconds": lambda: int(duration * 1000),
            "microseconds": lambda: int(duration * 1_000_000),
            "decimal_seconds": lambda: "%.6f" % duration,
            "bracketed_pid": lambda: "<%d>" % entry.pid,
        }[name]()


def is_gunicorn_format(fmt: str) -> bool:
    return "%(" in fmt


def render(fmt: str, entry: Entry, names=None) -> str:
    """One line; `names`: the {atoms} `fmt` uses (format_atoms), else all are computed."""
    if fmt == JSON_FORMAT:
        return entry.json()
    if is_gunicorn_format(fmt):
        return fmt % GunicornAtoms(entry)
    return fmt.format_map(entry.atoms(names))


def format_atoms(fmt: str) -> list | None:
    """The {atoms} a Python format names (None for the other formats: they compute their own)."""
    if fmt == JSON_FORMAT or is_gunicorn_format(fmt):
        return None
    names = {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(fmt) if field}
    return [name for name in _ATOMS if name in names]


class _SampleRequest:
    params = [("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/?a=1"), ("REMOTE_ADDR", "127.0.0.1")]
    environ = {"SCRIPT_NAME": "", "PATH_INFO": "/"}
    request_id = 1
    bytes_out = 0
    status = "200 OK"
    started = 0.0


def check_format(fmt: str | None) -> None:
    """Refuse an unknown atom or a bad format spec at start-up, not at the first request."""
    fmt = fmt or DEFAULT_FORMAT
    try:
        render(fmt, Entry(_SampleRequest()))
    except KeyError as exc:
        atom = ("%%(%s)s" if is_gunicorn_format(fmt) else "{%s}") % exc.args[0]
        raise ConfigError("--access-log-format: unknown atom %s (see the README for the list)"
                          % atom) from None
    except (ValueError, IndexError, TypeError) as exc:
        raise ConfigError("--access-log-format: %s" % exc) from None


class AccessLogFile(logging.Handler):
    """The --access-log file (`-`: the process's standard error, as it was
    when the log was configured).  Each line is one write(2) to a file
    opened O_APPEND, so the lines of the workers and threads never mix;
    a file that logrotate moved away is reopened (looked at once a second,
    where logging's WatchedFileHandler looks at every line), and SIGUSR1
    reopens it at once.  A write that fails (a full disk) drops the line
    with a warning a minute, and never fails the request."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._fd = -1
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file open
        self._look_at = 0.0  # when to look whether the path still names it
        self._warned_at = -60.0
        self.reopen()

    def reopen(self) -> None:
        """Raises OSError when the file cannot be opened (at start-up).  The
        new file takes the old one's descriptor (dup2): a thread writing at
        that moment writes to one or the other, never to a descriptor closed
        under it and reused."""
        if self.path == "-":
            if self._fd < 0:
                self._fd = os.dup(2)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        st = os.fstat(fd)
        self._identity = (st.st_dev, st.st_ino)
        if self._fd < 0:
            self._fd = fd
        else:
            os.dup2(fd, self._fd, inheritable=False)
            os.close(fd)

    def write_line(self, line: str) -> None:
        if self._identity is not None and time.monotonic() >= self._look_at:
            self._reopen_if_moved()
        data = (line + "\n").encode("utf-8", "backslashreplace")
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as exc:
            self._write_failed(exc)

    def emit(self, record: logging.LogRecord) -> None:
        self.write_line(self.format(record))

    def reopen_or_warn(self) -> None:
        """reopen(), once serving: a file that cannot be opened is a warning."""
        try:
            self.reopen()
        except OSError as exc:
            self._write_failed(exc)

    def _reopen_if_moved(self) -> None:
        self._look_at = time.monotonic() + 1.0
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        except OSError:
            return
        if moved:
            self.reopen_or_warn()

    def _write_failed(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60.0:
            self._warned_at = now
            logging.getLogger("wsgi_fcgi").warning("access log %s: %s; its lines are dropped meanwhile",
                                                   self.path, exc.strerror or exc)


def configure(path: str) -> None:
    handler = AccessLogFile(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers[:] = [handler]
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


class AccessLogger:
    """`on_request_end` hook writing one line per request.  While the
    access log's only handler is configure()'s (--log-config may give
    `wsgi_fcgi.access` other handlers), the line goes straight to its file,
    without a LogRecord: logging's machinery cost more than the rest of a
    small request."""

    def __init__(self, fmt: str | None) -> None:
        """`fmt`: --access-log-format; None (the setting's default) is DEFAULT_FORMAT.  The
        setting itself keeps None, so a HUP does not see it changed."""
        self.format = fmt = fmt or DEFAULT_FORMAT
        self.names = format_atoms(fmt)
        self.pid = os.getpid()  # made in the worker, after its fork: getpid() is a system call a line

    def __call__(self, request) -> None:
        line = render(self.format, Entry(request, self.pid), self.names)
        handlers = access_log.handlers
        if (len(handlers) == 1 and type(handlers[0]) is AccessLogFile and not access_log.filters
                and access_log.isEnabledFor(logging.INFO)):
            handlers[0].write_line(line)
        else:
            access_log.info("%s", line)


def reopen_log_files() -> None:
    """SIGUSR1: close every log file so the next line opens it again (after logrotate)."""
    for logger in (logging.getLogger(), access_log):
        for handler in logger.handlers:
            if isinstance(handler, AccessLogFile):
                handler.reopen_or_warn()
            elif isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
