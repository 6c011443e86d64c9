"""A gunicorn worker class that speaks FastCGI instead of HTTP.

    gunicorn -k wsgi_fcgi.gunicorn_worker.FastCGIWorker -w 2 --threads 8 -b 127.0.0.1:9000 myapp:app

gunicorn's master binds the listeners, forks, watches and recycles workers;
each worker runs the same engine as `python -m wsgi_fcgi` (`server.Server`)
on the sockets it inherited.  This module imports gunicorn, so nothing else in
the package imports it: gunicorn stays an optional extra.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
import weakref

from gunicorn.workers.base import Worker

from .handoff import Handoff
from .memory import prepare_to_serve
from .scoreboard import ConnectionShare, Scoreboard
from .server import Request, Server
from .settings import gunicorn_server_options
from .wsgi import INTERNAL_ERROR, InvalidResponse, encode_head, simple_response

_engine_log = logging.getLogger("wsgi_fcgi")

#: Workers that can share connections out at once: the old generation
#: draining after a HUP, the new one, and those added by TTIN.  A worker
#: beyond them takes connections as the kernel hands them (it never stands aside).
SHARE_SLOTS = 64


class RequestInfo:
    """What gunicorn's hooks and access log read from its `Request`, taken
    from the FastCGI request's CGI environ."""

    def __init__(self, environ: dict, fcgi_request: Request) -> None:
        self.fcgi_request = fcgi_request
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.uri = environ["RAW_URI"]
        self.path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        self.query = environ.get("QUERY_STRING", "")
        self.fragment = ""
        protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        major, _, minor = protocol.partition("/")[2].partition(".")
        self.version = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (1, 1)
        self.scheme = environ.get("wsgi.url_scheme", "http")
        self.remote_addr = environ.get("REMOTE_ADDR")
        self.body = environ.get("wsgi.input")
        # gunicorn's req.headers: [(NAME, value)] with dashes, in upper case
        self.headers = [(name[5:].replace("_", "-"), value) for name, value in environ.items()
                        if name.startswith("HTTP_") and isinstance(value, str)]
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                self.headers.append((name.replace("_", "-"), environ[name]))


class ResponseInfo:
    """What gunicorn's post_request hook and access log read from its `Response`."""

    def __init__(self, status: str, headers: list, sent: int) -> None:
        self.status = status
        self.status_code = int(status.split(None, 1)[0])
        self.headers = headers
        self.sent = sent  # body bytes, as gunicorn counts them (the 'b' atom)
        self.response_length = sent


def _split_cgi_head(response: bytes) -> tuple[str, list, int]:
    """(status, headers, head length) of a complete CGI response the bridge wrote itself."""
    head = response.partition(b"\r\n\r\n")[0]
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].partition(": ")[2]
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    return status, headers, len(head) + 4


class _RunningRequest:
    """What the worker remembers about a request between the app call and its end."""

    __slots__ = ("environ", "req", "status", "headers")

    def __init__(self, environ: dict, req: RequestInfo) -> None:
        self.environ = environ
        self.req = req
        self.status: str | None = None
        self.headers: list = []


class FastCGIWorker(Worker):
    """gunicorn worker: FastCGI on gunicorn's listeners with wsgi_fcgi's engine."""

    server: Server | None = None
    #: Idle kept connections of a worker that stops (recycling, HUP) go to the
    #: live workers (handoff.py).  Made once in gunicorn's arbiter, which calls
    #: check_config before it forks, so that every worker inherits it.
    handoff: Handoff | None = None
    #: New connections go to the worker holding the fewest (scoreboard.ConnectionShare):
    #: the kernel wakes every worker for one and the first to run takes it, which left
    #: one worker with all of nginx's kept connections.  Made with the hand-off.
    share_board: Scoreboard | None = None
    #: In the arbiter: the worker object each slot of share_board was given to
    _share_owners: dict[int, weakref.ref] = {}

    @classmethod
    def check_config(cls, cfg, log) -> None:
        if cls.handoff is None:
            cls.handoff = Handoff()
        if cls.share_board is None:
            cls.share_board = Scoreboard(SHARE_SLOTS)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)  # in the arbiter, before it forks this worker
        self.share_index = self._claim_share_slot()

    def _claim_share_slot(self) -> int | None:
        """The first slot of share_board whose worker is gone (the arbiter
        reaped it, or its process no longer exists), its counts cleared."""
        board = self.share_board
        if board is None or os.getpid() != self.ppid:
            return None
        owners = FastCGIWorker._share_owners
        for index in range(board.slots):
            owner = owners.get(index)
            worker = owner() if owner is not None else None
            if worker is None or not _process_exists(worker.pid):
                owners[index] = weakref.ref(self)
                board.set_connections(index, 0, -1)
                board.claim(index)
                return index
        return None

    def run(self) -> None:
        cfg = self.cfg
        self._adopt_gunicorn_logging()
        self._running = threading.local()
        self._count_lock = threading.Lock()
        self.server = Server(
            self._wrap_app(self.wsgi),
            sockets=[getattr(sock, "sock", sock) for sock in self.sockets],
            multiprocess=cfg.workers > 1,
            # gunicorn's way to mount an app under a prefix: --env SCRIPT_NAME=/prefix
            script_name=os.environ.get("SCRIPT_NAME", ""),
            handoff=self.handoff,
            **gunicorn_server_options(cfg),
        )
        self.server.on_tick.append(self._tick)
        self.server.on_request_end.append(self._request_ended)
        board, index = self.share_board, self.share_index
        if board is not None and index is not None:
            self.server.loop.share = ConnectionShare(board, index)
        prepare_to_serve()
        self.notify()
        try:
            self.server.serve_forever()
        finally:
            if board is not None and index is not None:
                board.set_connections(index, 0, -1)  # held none, takes none

    def _adopt_gunicorn_logging(self) -> None:
        """Send the engine's log lines to gunicorn's error log, same format and level."""
        error_log = getattr(self.log, "error_log", None)
        if error_log is None or _engine_log.handlers:
            return
        for handler in error_log.handlers:
            _engine_log.addHandler(handler)
        _engine_log.setLevel(error_log.level)
        _engine_log.propagate = False

    # -- gunicorn's worker contract -------------------------------------------

    def _tick(self) -> None:
        """In the loop thread, about once a second: the heartbeat the master's
        --timeout watches, and the reasons to stop."""
        self.notify()
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False
        if not self.alive:
            self.server.shutdown(graceful=True)  # at most --graceful-timeout

    def handle_exit(self, sig, frame) -> None:
        """SIGTERM: finish the running requests (at most --graceful-timeout)."""
        self.alive = False
        if self.server is not None:
            self.server.shutdown(graceful=True)

    def handle_quit(self, sig, frame) -> None:
        """SIGQUIT/SIGINT: stop now."""
        if self.server is None:
            super().handle_quit(sig, frame)
            return
        self.alive = False
        self.cfg.worker_int(self)
        self.server.shutdown(graceful=False)

    # -- per request ---------------------------------------------------------------

    def _wrap_app(self, app):
        """The app behind gunicorn's pre_request hook, noting the response head
        for the post_request hook and the access log."""
        def wsgi_app(environ, start_response):
            # gunicorn's RAW_URI: the request target as the client sent it
            environ.setdefault("RAW_URI", environ.get("REQUEST_URI") or request_target(environ))
            request = threading.current_thread().request  # a server.PoolThread
            state = _RunningRequest(environ, RequestInfo(environ, request))
            self._running.state = state
            self.cfg.pre_request(self, state.req)

            def noting_start_response(status, headers, exc_info=None):
                state.status, state.headers = status, list(headers)
                return start_response(status, headers, exc_info)

            return app(environ, noting_start_response)

        return wsgi_app

    def _request_ended(self, request: Request) -> None:
        """In the request thread, after FCGI_END_REQUEST went out."""
        state = getattr(self._running, "state", None)
        self._running.state = None
        if state is not None and state.environ is request.environ:
            self._after_app(request, state)
        elif request.status and request.environ is not None:  # refused before the app (413, 503)
            environ = request.environ
            environ.setdefault("RAW_URI", environ.get("REQUEST_URI") or request_target(environ))
            self._after_app(request, _RunningRequest(environ, RequestInfo(environ, request)))
        with self._count_lock:
            self.nr += 1
            recycle = self.nr >= self.max_requests and self.alive
            if recycle:
                self.alive = False
        if recycle:
            self.log.info("Autorestarting worker after current request.")
            self.server.shutdown(graceful=True)

    def _after_app(self, request: Request, state: _RunningRequest) -> None:
        status, headers = request.status or "500 Internal Server Error", state.headers
        try:
            head_length = len(encode_head(status, headers)) if state.status == status else None
        except InvalidResponse:
            head_length = None
        if head_length is None:
            # The bridge answered, not the app: a 500 for its failure, or a
            # limit (413, 503, 504) the engine enforced.
            answer = INTERNAL_ERROR if status.startswith("500") else simple_response(status, status.partition(" ")[2])
            status, headers, head_length = _split_cgi_head(answer)
        resp = ResponseInfo(status, headers, max(0, request.bytes_out - head_length))
        elapsed = datetime.timedelta(seconds=time.monotonic() - request.started)
        try:
            self.log.access(resp, state.req, state.environ, elapsed)
        except Exception:
            self.log.exception("Error writing the access log")
        try:
            self.cfg.post_request(self, state.req, state.environ, resp)
        except Exception:
            self.log.exception("Exception in post_request hook")


def _process_exists(pid) -> bool:
    """`pid` (gunicorn's "[booting]" before the fork) is a process."""
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's: it exists
    return True


def request_target(environ: dict) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING")
    return path + ("?" + query if query else "")
