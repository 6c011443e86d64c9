"""The error log: `--error-log`, `--log-level`, `--error-log-format text|json`,
`--log-config FILE` (dictConfig), `--capture-output`.

Text lines escape the control characters of a record's arguments as \\xHH
(a URI or header from a peer cannot start a forged line or send terminal
escapes); JSON lines are one `json.dumps` object each.  Times are RFC 3339.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.config
import logging.handlers
import os
import sys
import threading

from .errors import ConfigError

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"

#: C0 controls, DEL and C1 controls (0x9b is a one-byte CSI)
_CONTROL = {code: "\\x%02X" % code for code in [*range(0x20), *range(0x7F, 0xA0)]}


def escape_controls(text: str) -> str:
    return text.translate(_CONTROL)


def rfc3339(timestamp: float) -> str:
    """2026-12-03T16:20:00.123+00:00, in local time."""
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """LOG_FORMAT with its arguments escaped.  One exception: an argument
    that closes a message ending in "\\n%s" is a block of text of ours (the
    slow-request log's Python stack) and keeps its lines."""

    def __init__(self, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)

    def format(self, record: logging.LogRecord) -> str:
        if record.args and isinstance(record.args, tuple):
            record = logging.makeLogRecord(record.__dict__)  # other handlers see the record unchanged
            block = isinstance(record.msg, str) and record.msg.endswith("\n%s")
            last = len(record.args) - 1
            record.args = tuple(escape_controls(arg) if isinstance(arg, str) and not (block and i == last) else arg
                                for i, arg in enumerate(record.args))
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message (and
    exception, stack when there are)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": rfc3339(record.created), "level": record.levelname, "logger": record.name,
                 "pid": record.process, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


def open_handler(path: str) -> logging.Handler:
    """`-` for stderr, else a file reopened after logrotate (SIGUSR1)."""
    return logging.StreamHandler(sys.stderr) if path == "-" else logging.handlers.WatchedFileHandler(path)


def configure_logging(level: str, error_log: str, fmt: str = "text", config_file: str | None = None) -> None:
    """The root logger to `error_log`; then `config_file`'s dictConfig, if
    any, on top (it may add handlers, loggers, formatters).  Raises OSError
    (the log file) or ConfigError (the config file)."""
    handler = open_handler(error_log)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    if config_file:
        apply_config_file(config_file)


def apply_config_file(path: str) -> None:
    """--log-config: a logging.config.dictConfig dict as JSON, or TOML
    (`.toml`); "version": 1 is added when missing."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError("cannot read --log-config %s: %s" % (path, exc.strerror or exc)) from None
    try:
        if path.endswith(".toml"):
            import tomllib
            config = tomllib.loads(data.decode("utf-8"))
        else:
            config = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ConfigError("--log-config %s: %s" % (path, exc)) from None
    if not isinstance(config, dict):
        raise ConfigError("--log-config %s: not a dictConfig mapping" % path)
    config.setdefault("version", 1)
    config.setdefault("disable_existing_loggers", False)
    try:
        logging.config.dictConfig(config)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError("--log-config %s: %s" % (path, exc)) from None


# -- --capture-output ------------------------------------------------------------

class OutputCapture:
    """--capture-output, in a worker: file descriptors 1 and 2 become pipes,
    and a thread per pipe logs each line to the error log (loggers
    `wsgi_fcgi.stdout` at INFO, `wsgi_fcgi.stderr` at WARNING), escaped or
    JSON like any record.  At the descriptor level, so that what C
    extensions, subprocesses and faulthandler write is caught too, not only
    print().  Log handlers that wrote to fd 1 or 2 get a copy of the
    original descriptor first, so their records do not come back."""

    _STREAMS = ((1, "stdout", logging.INFO), (2, "stderr", logging.WARNING))

    def __init__(self) -> None:
        self.saved = {fd: os.dup(fd) for fd, _, _ in self._STREAMS}
        self._move_stream_handlers()
        self.threads = []
        for fd, name, level in self._STREAMS:
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(target=self._pump, args=(read_end, logging.getLogger("wsgi_fcgi." + name),
                                                               level), name="capture-" + name, daemon=True)
            thread.start()
            self.threads.append(thread)
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=True)

    def _move_stream_handlers(self) -> None:
        loggers = [logging.getLogger()] + [logger for logger in logging.root.manager.loggerDict.values()
                                           if isinstance(logger, logging.Logger)]
        for logger in loggers:
            for handler in logger.handlers:
                if type(handler) is not logging.StreamHandler:
                    continue
                try:
                    fd = handler.stream.fileno()
                except (AttributeError, OSError, ValueError):
                    continue
                if fd in self.saved:
                    handler.setStream(os.fdopen(os.dup(self.saved[fd]), "w", buffering=1,
                                                errors="backslashreplace"))

    @staticmethod
    def _pump(fd: int, logger: logging.Logger, level: int) -> None:
        pending = b""
        with open(fd, "rb", buffering=0) as pipe:
            while True:
                data = pipe.read(65536)
                if not data:
                    break
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    logger.log(level, "%s", line.rstrip(b"\r").decode("utf-8", "backslashreplace"))
        if pending:
            logger.log(level, "%s", pending.decode("utf-8", "backslashreplace"))

    def stop(self, timeout: float = 2.0) -> None:
        """Put the original descriptors back (the pipes see EOF) and let the
        threads log what was left."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        for thread in self.threads:
            thread.join(timeout)
