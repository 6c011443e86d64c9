"""The WSGI side (PEP 3333): the environ entries of the server, running the
app, turning status, headers and body into a CGI response (the environ from
FastCGI params is environ.py's).

No sockets here either: the response goes to a `transport`, an object with

    send(data, end, head=b"") -> bool      # FCGI_STDOUT bytes (head first); end=True
                                           # also closes STDOUT and sends END_REQUEST;
                                           # False once the request is gone
    send_stderr(data: bytes) -> None       # FCGI_STDERR
    truncate() -> None                     # the app failed after its head went out:
                                           # end so that the client sees a cut body
    aborted: bool                          # the web server or the connection is gone
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable

from .body import ClientDisconnected

log = logging.getLogger("wsgi_fcgi")
app_log = logging.getLogger("wsgi_fcgi.app")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# RFC 9110 5.5: a field value is visible characters, SP, HTAB and obs-text.
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search
_STATUS = re.compile(r"[1-9][0-9][0-9](?: [^\x00-\x1f\x7f]*)?").fullmatch
# An app sends few distinct statuses and header names: each is matched once, then
# looked up (bounded caches; a miss costs the match).  Values vary: printable
# ASCII, the common case, passes without the expression.
_is_status = functools.lru_cache(maxsize=256)(lambda status: _STATUS(status) is not None)
_is_header_name = functools.lru_cache(maxsize=1024)(lambda name: _HEADER_NAME(name) is not None)

INTERNAL_ERROR = (b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 21\r\n\r\nInternal Server Error")


def head_of(response: bytes) -> bytes:
    """A CGI response's head, its blank line included: the answer to HEAD."""
    return response[:response.index(b"\r\n\r\n") + 4]


INTERNAL_ERROR_HEAD = head_of(INTERNAL_ERROR)  # for HEAD (Response.head_only)


def simple_response(status: str, body: str) -> bytes:
    """A complete CGI response the server itself gives (errors, limits, status pages)."""
    data = body.encode("utf-8")
    return ("Status: %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n"
            % (status, len(data))).encode("latin-1") + data


class InvalidResponse(ValueError):
    """The app gave a status or header that cannot be sent."""


class ClientGone(Exception):
    """The request was aborted or its connection lost while the app was running."""


class FileWrapper:
    """`wsgi.file_wrapper` (PEP 3333 "Optional Platform-Specific File Handling").

    A regular file (or an in-memory one) is read in blocks of FILE_BLOCK,
    whatever block size the app suggests: Django's FileResponse suggests 4
    KiB and Flask's send_file 8 KiB, each block a read, a FastCGI record and
    a write, where a block of 256 KiB is a read and a write.  PEP 3333 lets
    the server ignore the suggestion, and a regular file's read returns the
    block at once.  Other file-likes (pipes, sockets) are read in the
    suggested blocks: a larger read would wait for data the peer could have
    had already.
    """

    def __init__(self, filelike, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = max(blksize, FILE_BLOCK) if _reads_at_once(filelike) else blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        blksize = self.blksize
        while True:
            data = read(blksize)
            if not data:
                return
            yield data


#: FileWrapper's block for a regular file: four FCGI_STDOUT records (spec 3.3: at most 65535 content
#: bytes each) and 4 bytes.  A power of two: a multiple of the file's buffer, which a BufferedReader
#: then reads with one system call (otherwise a second one fills its buffer for the rest).
FILE_BLOCK = 1 << 18


def _reads_at_once(filelike) -> bool:
    """Whether `filelike` is an in-memory file or a regular file opened by
    open(): its read(n) returns n bytes until its end without waiting.  Only
    these types are asked for their fileno(): a SpooledTemporaryFile's would
    move it to disk."""
    kind = type(filelike)
    if kind is io.BytesIO:
        return True
    if kind not in (io.BufferedReader, io.BufferedRandom, io.FileIO):
        return False
    try:
        return stat.S_ISREG(os.fstat(filelike.fileno()).st_mode)
    except (OSError, ValueError):  # closed, or no descriptor
        return False


# -- environ (the per-request part: environ.py) ----------------------------------

def base_environ(*, multithread: bool = True, multiprocess: bool = False) -> dict:
    """The environ entries that are the same for every request of a server."""
    return {
        "wsgi.version": (1, 0),
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        # wsgi.input returns b"" at the end of FCGI_STDIN, so it may be read
        # to EOF even without CONTENT_LENGTH (a chunked upload through nginx's
        # `fastcgi_request_buffering off`); werkzeug/Flask read such a body
        # only when this is set, else they see it empty.
        "wsgi.input_terminated": True,
    }


# -- response ------------------------------------------------------------------

def encode_head(status: str, headers: list) -> bytes:
    """The CGI response head (RFC 3875 6.3): Status line, headers, blank line."""
    if type(status) is not str or not _is_status(status):
        raise InvalidResponse("invalid status %r" % (status,))
    lines = ["Status: ", status, "\r\n"]
    for item in headers:
        try:
            if isinstance(item, (str, bytes)):  # "XY" would unpack as ("X", "Y")
                raise TypeError
            name, value = item
        except (TypeError, ValueError):
            raise InvalidResponse("header %r is not a (name, value) pair" % (item,)) from None
        if type(name) is not str or not _is_header_name(name):
            raise InvalidResponse("invalid header name %r" % (name,))
        if type(value) is not str or (not (value.isascii() and value.isprintable()) and _BAD_HEADER_VALUE(value)):
            raise InvalidResponse("invalid value for header %s: %r" % (name, value))
        lines += (name, ": ", value, "\r\n")
    lines.append("\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise InvalidResponse("response head is not latin-1: %s" % exc) from None


_CONTENT_LENGTH = b"\r\ncontent-length:"


def declared_length(head: bytes) -> int | None:
    """The Content-Length of an encoded head (encode_head's: every header
    line follows a CRLF, no value holds one); None without one, or with one
    that is not a plain number or is sent twice."""
    lowered = head.lower()
    at = lowered.find(_CONTENT_LENGTH)
    if at < 0 or lowered.find(_CONTENT_LENGTH, at + 1) >= 0:
        return None
    start = at + len(_CONTENT_LENGTH)
    value = head[start:head.index(b"\r\n", start)].strip(b" \t")
    if not value.isdigit() or len(value) > 18:
        return None
    return int(value)


class Response:
    """`start_response`, `write` and the head-before-body rule of one request."""

    __slots__ = ("transport", "head_only", "head", "head_sent", "status", "bytes_sent", "finished", "body_left")

    def __init__(self, transport, head_only: bool = False) -> None:
        self.transport = transport
        # A HEAD request: RFC 3875 4.3.3, "the script MUST NOT provide a
        # response message-body for a HEAD request".  Its body is not sent
        # (the web server would read and drop it: a HEAD of a large download
        # read the whole file), and the app's iterable stops once the head is out.
        self.head_only = head_only
        self.head: bytes | None = None
        self.head_sent = False
        self.status: str | None = None
        self.bytes_sent = 0
        # The request has ended (finish_request(), or the body reached its
        # Content-Length): later output is dropped
        self.finished = False
        self.body_left: int | None = None  # body bytes the Content-Length still allows

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid a reference cycle
        elif self.head is not None:
            raise AssertionError("start_response() called again without exc_info")
        self.head = encode_head(status, headers)
        self.status = status
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy `write()` callable: send now, headers first."""
        if not self.send(data, end=False):
            raise ClientGone("request aborted or connection lost")

    def finish_request(self) -> None:
        """`environ['wsgi_fcgi.finish_request']()`, php-fpm's fastcgi_finish_request:
        send the head (if start_response was called) and end the request now;
        the app goes on, and whatever it sends later is dropped."""
        if self.finished:
            return
        if not self.head_sent and self.head is not None:
            self.send(b"", end=True)
        else:
            self.transport.send(b"", True)
        self.finished = True

    def send(self, data: bytes, end: bool) -> bool:
        if self.finished:
            if data and self.body_left == 0:
                self._beyond_length(len(data))
            return True
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError("the app gave %s, not bytes" % type(data).__name__)
            data = bytes(data)
        head = b""
        if not self.head_sent:
            if self.head is None:
                raise AssertionError("the app sent body data before calling start_response()")
            self.head_sent = True
            head = self.head
            if self.head_only:
                data, end = b"", True
                self.finished = True
            elif not end:  # more may follow: the declared length tells when the body is complete
                self.body_left = declared_length(head)
        if not end and self.body_left is not None:
            data, end = self._within_length(data, self.body_left)
        self.bytes_sent += len(head) + len(data)
        return self.transport.send(data, end, head)

    def _within_length(self, data: bytes, left: int) -> tuple[bytes, bool]:
        """PEP 3333 "Handling the Content-Length Header": send no more than
        the header allows, and end the request with the chunk that completes
        the body, in the same write (not in one more write once the app's
        iterable is exhausted: most frameworks return an iterable, not a list)."""
        if len(data) < left:
            self.body_left = left - len(data)
            return data, False
        self.body_left = 0
        self.finished = True
        if len(data) > left:
            self._beyond_length(len(data) - left)
            data = data[:left]
        return data, True

    def _beyond_length(self, extra: int) -> None:
        if self.body_left == 0:
            self.body_left = -1  # one warning a response
            log.warning("%s response: the app sent more than the Content-Length it declared; %d bytes "
                        "dropped, and any it sends later (PEP 3333)", self.status, extra)


def run_app(app: WSGIApp, environ: dict, transport) -> Response:
    """Call the app and stream its answer; never raises for the app's faults."""
    response = Response(transport, environ.get("REQUEST_METHOD") == "HEAD")
    environ["wsgi_fcgi.finish_request"] = response.finish_request
    try:
        result = app(environ, response.start_response)
        try:
            if type(result) is list and len(result) == 1 and type(result[0]) is bytes:
                response.send(result[0], end=True)  # the common case: one write
            else:
                for chunk in result:
                    if chunk:
                        if not response.send(chunk, end=False):
                            raise ClientGone("request aborted or connection lost")
                        if response.head_only:
                            break  # the head is out, and nothing else of a HEAD's answer
                    elif transport.aborted:  # an empty chunk (a heartbeat) is checked too
                        raise ClientGone("request aborted or connection lost")
                response.send(b"", end=True)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except (ClientGone, ClientDisconnected):  # the latter from wsgi.input: aborted or lost mid-body
        log.debug("%s %s: client went away before the response was complete",
                  environ.get("REQUEST_METHOD"), environ.get("REQUEST_URI", environ.get("PATH_INFO")))
    except BaseException:  # SystemExit in a request too: the app's fault, not the thread's
        app_fault(response, environ, sys.exc_info())
    return response


def app_fault(response: Response, environ: dict, exc_info) -> None:
    """Log the app's exception; answer 500 if the head is not out yet, else end."""
    app_log.error("Error handling %s %s", environ.get("REQUEST_METHOD"),
                  environ.get("REQUEST_URI", environ.get("PATH_INFO")), exc_info=exc_info)
    if not response.head_sent:
        response.head_sent = True
        response.status = "500 Internal Server Error"
        answer = INTERNAL_ERROR_HEAD if response.head_only else INTERNAL_ERROR
        response.bytes_sent += len(answer)
        response.transport.send(answer, True)
    else:
        response.transport.truncate()


class ErrorStream:
    """`wsgi.errors`: lines go to the error log and to the web server as FCGI_STDERR."""

    __slots__ = ("transport", "_partial")

    def __init__(self, transport) -> None:
        self.transport = transport
        self._partial = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("wsgi.errors takes str, not %s" % type(text).__name__)
        if text:
            self.transport.send_stderr(text.encode("utf-8", "backslashreplace"))
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                app_log.error("%s", line)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            app_log.error("%s", self._partial)
            self._partial = ""
