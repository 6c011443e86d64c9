"""`python -m wsgi_fcgi [OPTIONS] MODULE:APP`: settings, logging, sockets,
then the master (or, with --no-master, one worker in this process).

The options themselves are declared in `settings.py`."""

from __future__ import annotations

import logging
import os
import sys

from . import build_description, privileges
from .apploader import AppImportError, enter_directory, load_app
from .errors import ConfigError, fail
from .listeners import bind_listeners, remove_unix_socket
from .logs import configure_logging
from .settings import SettingError, Settings
from .settings import load as load_settings

log = logging.getLogger("wsgi_fcgi")

def load(settings: Settings):
    debug = settings.log_level == "debug"
    try:
        return load_app(settings.app)
    except AppImportError as exc:
        fail(str(exc), debug)


def main(argv: list | None = None) -> None:
    start_dir = os.getcwd()
    try:
        invocation = load_settings(argv, version=build_description())
    except SettingError as exc:
        fail(str(exc), False)
    settings = invocation.settings
    if invocation.print_config:
        sys.stdout.write(settings.describe())
        sys.exit(0)
    debug = settings.log_level == "debug"
    try:
        configure_logging(settings.log_level, settings.error_log, settings.error_log_format, settings.log_config)
    except ConfigError as exc:
        fail(str(exc), debug)
    except OSError as exc:
        fail("cannot open --error-log %s: %s" % (settings.error_log, exc.strerror), debug)
    if settings.chdir:
        try:
            enter_directory(settings.chdir)
        except OSError as exc:
            fail("--chdir %s: %s" % (settings.chdir, exc.strerror), debug)
    else:
        sys.path.insert(0, os.getcwd())
    privileges.apply_umask(settings)
    if settings.access_log:
        from . import accesslog
        try:
            accesslog.check_format(settings.access_log_format)
            accesslog.configure(settings.access_log)
        except ConfigError as exc:
            fail(str(exc), debug)
        except OSError as exc:
            fail("cannot open --access-log %s: %s" % (settings.access_log, exc.strerror), debug)
    from .master import check_pool, inherited_sockets
    try:
        check_pool(settings)
        privileges.check(settings)
    except ConfigError as exc:
        fail(str(exc), debug)
    if invocation.check:
        privileges.drop(settings)  # load the app as the workers would
        load(settings)
        sys.stdout.write("wsgi-fcgi: configuration ok, app %s loads\n" % settings.app)
        sys.exit(0)
    try:
        # a USR2 upgrade passes the old master's sockets: never bound again
        sockets = inherited_sockets() or bind_listeners(settings.bind or None, settings.backlog,
                                                        settings.socket_mode)
        privileges.chown_sockets(sockets, settings)
        privileges.chown_log_files(settings)
    except ConfigError as exc:
        fail(str(exc), debug)
    if settings.no_master:
        sys.exit(run_single(settings, sockets))
    from .master import Master
    sys.exit(Master(settings, sockets, start_dir=start_dir).run())


def run_single(settings: Settings, sockets: list) -> int:
    """--no-master: the worker's code, in this process."""
    from .scoreboard import Scoreboard
    from .worker import BOOT_FAILED, Worker
    if settings.workers > 1:
        log.warning("--no-master serves in one process: --workers %d is ignored", settings.workers)
        settings.workers = 1
    try:
        code = Worker(settings, sockets, Scoreboard(1), 0, generation=1, master_pid=None).run()
    finally:
        for sock in sockets:
            remove_unix_socket(sock)
            sock.close()
    return 1 if code == BOOT_FAILED else code
