"""systemd's side of the contract, without libsystemd: socket activation
(sd_listen_fds(3)) and readiness notification (sd_notify(3)).

Both are plain protocols: systemd passes the sockets of a .socket unit as
fds 3.. with LISTEN_FDS=N and LISTEN_PID=<our pid>, and a Type=notify
service reports its state as datagrams ("READY=1", "STATUS=...") to the
unix socket named in NOTIFY_SOCKET (a leading '@' is an abstract name).
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("wsgi_fcgi")

#: sd_listen_fds(3): the first passed socket is fd 3
SD_LISTEN_FDS_START = 3


def listen_fds(environ=None) -> list:
    """The fds systemd passed to this process, or [] (not activated, or the
    variables were meant for another process: LISTEN_PID differs).

    Like sd_listen_fds(unset_environment=1), the variables are removed so
    that a child process does not take them for its own."""
    environ = os.environ if environ is None else environ
    try:
        pid = int(environ.get("LISTEN_PID", ""))
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    if pid != os.getpid() or count <= 0:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def notify(state: str, environ=None) -> bool:
    """Send `state` ("READY=1", "STATUS=...", several joined by newlines) to
    systemd; False when not run by systemd (no NOTIFY_SOCKET) or if it failed."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8", "replace"))
    except OSError as exc:
        log.debug("sd_notify %r to %s failed: %s", state, environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1\nSTATUS=%s\nMAINPID=%d" % (status, os.getpid()))


def reloading(status: str) -> bool:
    # MONOTONIC_USEC: what Type=notify-reload (systemd >= 253) asks for with RELOADING=1
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=%s" % (usec, status))


def stopping(status: str) -> bool:
    return notify("STOPPING=1\nSTATUS=%s" % status)


def status(text: str) -> bool:
    return notify("STATUS=%s" % text)
