"""`python -m wsgi_fcgi [OPTIONS] MODULE:APP` (see CONTRACT.md for the options)."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from typing import NoReturn, Optional

from . import __version__
from .apploader import AppImportError, load_app
from .listeners import ConfigError, bind_listeners, remove_unix_socket

log = logging.getLogger("wsgi_fcgi")

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an octal mode like 0660" % text) from None


def _size(text: str) -> int:
    """Bytes, with an optional K, M or G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    number, factor = text.strip().lower(), 1
    if number[-1:] in units:
        number, factor = number[:-1], units[number[-1]]
    try:
        value = int(number) * factor
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a size like 1048576, 512K or 10M" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("a size cannot be negative")
    return value


def _number(convert, minimum, what: str):
    """An argparse type: `convert(text)`, at least `minimum`."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not %s" % (text, what)) from None
        if value < minimum:
            raise argparse.ArgumentTypeError("%s must be at least %s" % (text, minimum))
        return value
    return parse


_positive = _number(int, 1, "a whole number")
_count = _number(int, 0, "a whole number")
_seconds = _number(float, 0, "a number of seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsgi-fcgi", description="Serve a WSGI application over FastCGI.")
    parser.add_argument("app", metavar="MODULE:APP",
                        help="the WSGI app: pkg.mod:app, pkg.mod, or pkg.mod:create_app()")
    parser.add_argument("-b", "--bind", action="append", metavar="ADDR",
                        help="HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable "
                             "(default 127.0.0.1:9000, or the listening socket on fd 0)")
    parser.add_argument("-w", "--workers", type=_positive, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads", type=_positive, default=8, help="request threads per worker (default 8)")
    parser.add_argument("--script-name", default="", metavar="PREFIX",
                        help="where the app is mounted, e.g. /app (default: the root)")
    parser.add_argument("--backlog", type=_positive, default=1024, help="listen backlog (default 1024)")
    parser.add_argument("--socket-mode", type=_octal, default=0o660, metavar="MODE",
                        help="permissions of a unix socket, octal (default 0660)")
    parser.add_argument("--allowed-servers", metavar="IP,...",
                        help="peers allowed over TCP (default: env FCGI_WEB_SERVER_ADDRS, else any)")
    parser.add_argument("--max-body-size", type=_size, default=0, metavar="BYTES",
                        help="refuse larger request bodies with 413 (default 0: no limit)")
    parser.add_argument("--max-params-size", type=_size, default=1 << 20, metavar="BYTES",
                        help="refuse larger FCGI_PARAMS with 431 (default 1M)")
    parser.add_argument("--max-connections", type=_positive, default=1024,
                        help="open connections per worker; more wait in the backlog (default 1024)")
    parser.add_argument("--max-queue", type=_positive, default=256,
                        help="requests waiting for a thread before 503 (default 256)")
    parser.add_argument("--keep-alive", type=_seconds, default=75.0, metavar="S",
                        help="close connections idle this long (default 75, above nginx's 60)")
    parser.add_argument("--read-timeout", type=_seconds, default=30.0, metavar="S",
                        help="drop a peer stalled inside a record this long (default 30)")
    parser.add_argument("--write-timeout", type=_seconds, default=60.0, metavar="S",
                        help="drop a peer that takes no response bytes this long (default 60; 0: never)")
    parser.add_argument("--graceful-timeout", type=_seconds, default=30.0, metavar="S",
                        help="how long stopping may wait for running requests (default 30)")
    parser.add_argument("--chdir", metavar="DIR", help="change to DIR before loading the app")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error", "critical"])
    parser.add_argument("--error-log", default="-", metavar="FILE", help="error log file, - for stderr")
    add_process_options(parser)
    parser.add_argument("--version", action="version", version="wsgi-fcgi " + __version__)
    return parser


def add_process_options(parser: argparse.ArgumentParser) -> None:
    """The master, its workers, status pages and logs (README: Process model)."""
    group = parser.add_argument_group("process manager")
    group.add_argument("--no-master", action="store_true",
                       help="serve in this one process, no master (for embedding and debugging); "
                            "implies one worker")
    group.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                       help="kill and replace a worker silent (no heartbeat) this long (default 30)")
    group.add_argument("--max-requests", type=_count, default=0, metavar="N",
                       help="recycle a worker after N requests (default 0: never)")
    group.add_argument("--max-requests-jitter", type=_count, default=0, metavar="N",
                       help="add 0..N at random to --max-requests per worker (default 0)")
    group.add_argument("--restart-threshold", type=_positive, default=10, metavar="N",
                       help="crash loop guard: after N worker deaths within --restart-window, "
                            "back off before starting more (default 10)")
    group.add_argument("--restart-window", type=_seconds, default=60.0, metavar="S",
                       help="see --restart-threshold (default 60)")
    group.add_argument("--status-path", metavar="PATH", help="serve the pool status page at PATH (off)")
    group.add_argument("--ping-path", metavar="PATH", help="answer 'pong' at PATH (off)")
    group.add_argument("--pool-name", metavar="NAME", help="pool name on the status page (default MODULE:APP)")
    group.add_argument("--slow-request-timeout", type=_seconds, default=0.0, metavar="S",
                       help="log the Python stack of a request still running after S seconds (0: off)")
    group.add_argument("--request-timeout", type=_seconds, default=0.0, metavar="S",
                       help="answer 504 and interrupt a request running longer than S seconds (0: off)")
    group.add_argument("--pid", metavar="FILE", help="write the master's pid to FILE")
    group.add_argument("--access-log", metavar="FILE", help="access log file, - for stderr (off)")
    group.add_argument("--access-log-format", default=None, metavar="FORMAT",
                       help="access log line, a Python format string over the atoms listed in the README")


def configure_logging(level: str, error_log: str) -> None:
    handler = (logging.StreamHandler(sys.stderr) if error_log == "-"
               else logging.handlers.WatchedFileHandler(error_log))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))


def server_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of `Server` from the command line."""
    return dict(
        threads=args.threads, script_name=args.script_name, backlog=args.backlog,
        socket_mode=args.socket_mode, allowed_servers=args.allowed_servers,
        max_body_size=args.max_body_size, max_params_size=args.max_params_size,
        max_connections=args.max_connections, max_queue=args.max_queue,
        keepalive_timeout=args.keep_alive, read_timeout=args.read_timeout,
        write_timeout=args.write_timeout,
        graceful_timeout=args.graceful_timeout, multiprocess=args.workers > 1,
    )


def fail(message: str, debug: bool) -> NoReturn:
    if debug:
        log.exception(message)
    sys.stderr.write("wsgi-fcgi: error: %s\n" % message)
    sys.exit(1)


def load(args: argparse.Namespace):
    debug = args.log_level == "debug"
    try:
        return load_app(args.app)
    except AppImportError as exc:
        fail(str(exc), debug)
    except Exception as exc:
        fail("cannot load app %r: %s: %s" % (args.app, type(exc).__name__, exc), debug)


def main(argv: Optional[list] = None) -> None:
    args = build_parser().parse_args(argv)
    debug = args.log_level == "debug"
    try:
        configure_logging(args.log_level, args.error_log)
    except OSError as exc:
        fail("cannot open --error-log %s: %s" % (args.error_log, exc.strerror), debug)
    if args.chdir:
        try:
            os.chdir(args.chdir)
        except OSError as exc:
            fail("--chdir %s: %s" % (args.chdir, exc.strerror), debug)
    sys.path.insert(0, os.getcwd())
    if args.access_log:
        from . import accesslog
        try:
            args.access_log_format = args.access_log_format or accesslog.DEFAULT_FORMAT
            accesslog.check_format(args.access_log_format)
            accesslog.configure(args.access_log)
        except ConfigError as exc:
            fail(str(exc), debug)
        except OSError as exc:
            fail("cannot open --access-log %s: %s" % (args.access_log, exc.strerror), debug)
    try:
        sockets = bind_listeners(args.bind, args.backlog, args.socket_mode)
    except ConfigError as exc:
        fail(str(exc), debug)
    if args.no_master:
        sys.exit(run_single(args, sockets))
    from .master import Master
    sys.exit(Master(args, sockets).run())


def run_single(args: argparse.Namespace, sockets: list) -> int:
    """--no-master: the worker's code, in this process."""
    from .scoreboard import Scoreboard
    from .worker import BOOT_FAILED, Worker
    if args.workers > 1:
        log.warning("--no-master serves in one process: --workers %d is ignored", args.workers)
        args.workers = 1
    try:
        code = Worker(args, sockets, Scoreboard(1), 0, generation=1, master_pid=None).run()
    finally:
        for sock in sockets:
            remove_unix_socket(sock)
            sock.close()
    return 1 if code == BOOT_FAILED else code
