"""--user, --group, --umask, --socket-owner, --socket-group.

The master binds as whoever started it (root, for a privileged port or a
socket in /run), gives the unix sockets it created their owner, group and
mode, and keeps its identity: like gunicorn's arbiter and php-fpm's master,
it only forks, signals and reopens its log files.  Each worker drops to
--user/--group (supplementary groups, then gid, then uid) before it imports
the app, so no code of the app ever runs as root.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
from typing import NamedTuple

from .errors import ConfigError

log = logging.getLogger("wsgi_fcgi")


class Identity(NamedTuple):
    user: str | None  # name for initgroups; None: keep the supplementary groups as they are
    uid: int
    gid: int


def lookup_user(text: str, what: str = "--user") -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except KeyError:
        raise ConfigError("%s %s: no such user" % (what, text)) from None


def lookup_group(text: str, what: str = "--group") -> int:
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ConfigError("%s %s: no such group" % (what, text)) from None


def worker_identity(settings) -> Identity | None:
    """Who the workers run as, or None to stay as we are.  Checked at start
    (one line on a mistake): an unknown user, or a change of user without root."""
    if not settings.user and not settings.group:
        return None
    if settings.user:
        entry = lookup_user(settings.user)
        identity = Identity(entry.pw_name, entry.pw_uid, entry.pw_gid)
    else:
        identity = Identity(None, os.getuid(), os.getgid())
    if settings.group:
        identity = identity._replace(gid=lookup_group(settings.group))
    if os.geteuid() != 0 and (identity.uid != os.geteuid() or identity.gid != os.getegid()):
        raise ConfigError("--user/--group need root (running as uid %d)" % os.geteuid())
    return identity


def check(settings) -> None:
    """At start: fail early on a bad name; warn when workers would run as root."""
    identity = worker_identity(settings)
    if settings.socket_owner:
        lookup_user(settings.socket_owner, "--socket-owner")
    if settings.socket_group:
        lookup_group(settings.socket_group, "--socket-group")
    if (identity.uid if identity else os.geteuid()) == 0:
        log.warning("the workers run the app as root: set --user (and --group) to an unprivileged "
                    "account, or run wsgi-fcgi as one (systemd: User=)")


def apply_umask(settings) -> None:
    if settings.umask is not None:
        os.umask(settings.umask)


def chown_sockets(sockets: list, settings) -> None:
    """--socket-owner/--socket-group for the unix sockets this process bound
    (an inherited socket's file is whoever made it's business)."""
    if not settings.socket_owner and not settings.socket_group:
        return
    from .listeners import created_socket_path
    uid = lookup_user(settings.socket_owner, "--socket-owner").pw_uid if settings.socket_owner else -1
    gid = lookup_group(settings.socket_group, "--socket-group") if settings.socket_group else -1
    for sock in sockets:
        path = created_socket_path(sock) if sock.family == socket.AF_UNIX else None
        if path is None:
            continue
        try:
            os.chown(path, uid, gid)
        except OSError as exc:
            raise ConfigError("cannot give unix:%s to --socket-owner/--socket-group: %s"
                              % (path, exc.strerror)) from None


def chown_log_files(settings) -> None:
    """The workers reopen the log files (USR1, rotation): they must be theirs."""
    identity = worker_identity(settings)
    if identity is None or os.geteuid() != 0:
        return
    for path in (settings.error_log, settings.access_log):
        if path and path != "-" and os.path.isfile(path):
            os.chown(path, identity.uid, identity.gid)


def drop(settings) -> None:
    """In a worker (or --no-master), before the app is imported."""
    identity = worker_identity(settings)
    if identity is None:
        return
    if os.geteuid() == 0:
        if identity.user is not None:
            os.initgroups(identity.user, identity.gid)
        else:
            os.setgroups([identity.gid])
    os.setgid(identity.gid)
    os.setuid(identity.uid)
