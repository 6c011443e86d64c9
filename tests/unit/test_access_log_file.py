"""The --access-log file: one write per line, reopened after logrotate (moved
away, or SIGUSR1), a full disk costing lines and not requests, and the
`wsgi_fcgi.access` logger still honoured when --log-config gives it handlers."""

import logging
import os
import time

import pytest

from wsgi_fcgi import accesslog


class Request:
    params = [("REMOTE_ADDR", "10.0.0.1"), ("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/a?b=1"),
              ("SERVER_PROTOCOL", "HTTP/1.1")]
    environ = {"SCRIPT_NAME": "", "PATH_INFO": "/a"}
    request_id = 1
    bytes_out = 77
    status = "200 OK"
    started = time.monotonic()


@pytest.fixture
def configured(tmp_path):
    """The access log configured on tmp_path/access.log; the logger put back after."""
    logger = accesslog.access_log
    saved = logger.handlers[:], logger.level, logger.propagate
    path = tmp_path / "access.log"
    accesslog.configure(str(path))
    handler = logger.handlers[0]
    yield path, handler
    os.close(handler._fd)  # close() leaves it open: a late request's line must not meet a reused descriptor
    logger.handlers[:], logger.level, logger.propagate = saved


def test_a_line_per_request_with_only_the_atoms_of_the_format(configured):
    path, _ = configured
    log = accesslog.AccessLogger("{remote_addr} {method} {uri} {status} {bytes} {pid}")
    assert log.names == ["remote_addr", "method", "uri", "status", "bytes", "pid"]
    log(Request())
    log(Request())
    assert path.read_text() == ("10.0.0.1 GET /a?b=1 200 77 %d\n" % os.getpid()) * 2


def test_a_moved_file_is_reopened_within_a_second(configured):
    path, handler = configured
    log = accesslog.AccessLogger("{uri}")
    log(Request())
    path.rename(path.with_name("access.log.1"))  # logrotate without copytruncate or a signal
    handler._look_at = time.monotonic() + 0.3
    log(Request())  # before the look: still the moved file
    time.sleep(0.35)
    log(Request())
    assert path.with_name("access.log.1").read_text() == "/a?b=1\n" * 2
    assert path.read_text() == "/a?b=1\n"


def test_reopen_keeps_the_descriptor(configured):
    # SIGUSR1: the new file takes the old descriptor's number, so a thread
    # writing meanwhile never writes to a descriptor closed and reused
    path, handler = configured
    fd = handler._fd
    path.rename(path.with_name("access.log.1"))
    accesslog.reopen_log_files()
    assert handler._fd == fd
    accesslog.AccessLogger("{uri}")(Request())
    assert path.read_text() == "/a?b=1\n"


def test_a_full_disk_drops_lines_with_a_warning_a_minute(configured, caplog):
    _, handler = configured
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, handler._fd)  # every write fails with ENOSPC
    os.close(full)
    log = accesslog.AccessLogger(accesslog.DEFAULT_FORMAT)
    with caplog.at_level(logging.WARNING, logger="wsgi_fcgi"):
        for _ in range(3):
            log(Request())  # no exception for the request's thread
    warnings = [r.getMessage() for r in caplog.records if r.name == "wsgi_fcgi"]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings


def test_handlers_from_log_config_get_the_records(configured):
    # --log-config may give wsgi_fcgi.access handlers of its own (syslog, ...)
    path, _ = configured
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
    accesslog.access_log.addHandler(Keep())
    accesslog.AccessLogger("{method} {uri}")(Request())
    assert seen == ["GET /a?b=1"]
    assert path.read_text() == "GET /a?b=1\n"  # through logging, to the file as well


def test_stderr_is_the_descriptor_it_was_when_configured(tmp_path, capfd):
    handler = accesslog.AccessLogFile("-")
    try:
        handler.write_line("to stderr")
        assert capfd.readouterr().err == "to stderr\n"
    finally:
        handler.close()
        os.close(handler._fd)
