"""`wsgi.input`: the request body, fed by the I/O loop, read by the app.

The I/O loop appends FCGI_STDIN chunks as they arrive (it never waits for the
app); the app's thread reads, blocking until enough has arrived.  Bodies are
kept in memory up to `spool_size` unread bytes, then move to an anonymous
temporary file, so an upload does not grow memory with its size and an app
that never reads its body does not stall the other requests on the connection.
"""

from __future__ import annotations

import collections
import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

from .memory import PIECE_COST

#: Unread bytes kept in memory before the body moves to a temporary file.
DEFAULT_SPOOL_SIZE = 1 << 20
#: A spooled body is read ahead in blocks of this size for readline(), so a
#: line is not a system call (and a copy of a block) of its own.
_READ_AHEAD = 65536
#: ... and so is it for read(size) below this size: a pread(2) of its own
#: for each 1 KiB read cost 1.5-1.8 times a slice of a block (8 KiB: 1.2).
_SMALL_READ = _READ_AHEAD // 4


def _write_all(fd: int, data: bytes, offset: int) -> int:
    """pwrite(2) `data` whole.  A write the disk could take only part of
    returns the part: the rest is written again, and fails (ENOSPC), where
    the body would have gone on without the bytes missing."""
    view = memoryview(data)
    written = 0
    while written < len(view):
        taken = os.pwrite(fd, view[written:], offset + written)
        if not taken:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written += taken
    return written


class ClientDisconnected(OSError):
    """The request was aborted or its connection lost while the app read its body."""


class RequestBody:
    """A file-like, read-only, streaming request body (PEP 3333 `wsgi.input`).

    `read()` with no size (or -1) reads to the end of FCGI_STDIN, so bodies
    without CONTENT_LENGTH (chunked uploads with nginx's
    `fastcgi_request_buffering off`) are read whole.
    """

    def __init__(self, spool_size: int = DEFAULT_SPOOL_SIZE, spool_dir: str | None = None) -> None:
        self._lock = threading.Lock()
        # Made only when a reader has to wait: most bodies are complete (or
        # empty) before the app reads them, and a Condition costs ~2 us.
        self._cond: threading.Condition | None = None
        # In memory: the chunks as they came (no copying on feed), the read
        # position inside the first one, and the unread total.
        self._chunks: collections.deque[bytes] = collections.deque()
        self._offset = 0
        self._buffered = 0
        self._file: IO[bytes] | None = None  # after spooling: the temporary file
        self._file_read = 0
        self._file_written = 0
        # read ahead from the file (by readline): bytes from offset _ahead_at
        self._ahead = b""
        self._ahead_at = 0
        self._eof = False
        self._error: BaseException | None = None
        self._spool_size = spool_size
        self._spool_dir = spool_dir
        self.received = 0

    # -- feeding side (I/O loop) ------------------------------------------

    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._eof or self._error is not None:
                return
            self.received += len(data)
            if self._file is not None:
                self._file_written += _write_all(self._file.fileno(), data, self._file_written)
            else:
                self._chunks.append(data)
                self._buffered += len(data)
                if self._buffered + PIECE_COST * len(self._chunks) > self._spool_size:
                    self._spool()
            self._wake_readers()

    def feed_eof(self) -> None:
        with self._lock:
            self._eof = True
            self._wake_readers()

    def fail(self, error: BaseException) -> None:
        """Make readers raise `error` (abort, lost connection, body too large)."""
        with self._lock:
            if self._error is None and not self._eof:
                self._error = error
            self._wake_readers()

    def _wake_readers(self) -> None:
        if self._cond is not None:
            self._cond.notify_all()

    def _spool(self) -> None:
        spool = tempfile.TemporaryFile(prefix="wsgi-fcgi-body-", dir=self._spool_dir)
        self._file = spool
        self._file_written = _write_all(spool.fileno(), self._take_memory(self._buffered), 0)

    @property
    def complete(self) -> bool:
        """The end of the stream has arrived (or the body failed)."""
        return self._eof or self._error is not None

    @property
    def bytes_in_memory(self) -> int:
        """Unread body bytes held in memory (0 once spooled to a file)."""
        return self._buffered

    @property
    def spooled(self) -> bool:
        return self._file is not None

    @property
    def spool_dir(self) -> str:
        """Where the body goes past spool_size ($TMPDIR unless given)."""
        return self._spool_dir or tempfile.gettempdir()

    # -- reading side (app thread) ----------------------------------------

    def _available(self) -> int:
        if self._file is not None:
            return self._file_written - self._file_read
        return self._buffered

    def _wait_for(self, size: int) -> None:
        """Wait until `size` bytes are buffered (size < 0: all of it) or the end."""
        while not self._eof and (size < 0 or self._available() < size):
            if self._error is not None:
                raise self._error
            if self._cond is None:
                self._cond = threading.Condition(self._lock)
            self._cond.wait()

    def _take(self, size: int) -> bytes:
        available = self._available()
        if size < 0 or size > available:
            size = available
        if self._file is not None:
            return self._take_file(self._file.fileno(), size)
        return self._take_memory(size)

    def _take_file(self, fd: int, size: int) -> bytes:
        """`size` (<= available) bytes of the spool file `fd`: a small read
        sliced from blocks read ahead, as readline's pieces are; a larger one
        read now, after what is left of the block read ahead."""
        if size < _SMALL_READ:
            return self._slice_ahead(fd, size)
        start = self._file_read - self._ahead_at
        data = self._ahead[start:start + size]  # b"" once the block is used up
        if len(data) < size:
            data += os.pread(fd, size - len(data), self._file_read + len(data))
        self._file_read += len(data)
        return data

    def _slice_ahead(self, fd: int, size: int) -> bytes:
        block, start = self._read_ahead(fd)
        data = block[start:start + size]
        self._file_read += len(data)
        if len(data) < size:  # it goes on in the next block
            data += self._slice_ahead(fd, size - len(data))
        return data

    def _take_memory(self, size: int) -> bytes:
        """`size` (<= buffered) bytes off the chunks; a whole chunk is not copied."""
        chunks = self._chunks
        offset = self._offset
        parts = []
        needed = size
        while needed:
            chunk = chunks[0]
            left = len(chunk) - offset
            if left <= needed:
                parts.append(chunk[offset:] if offset else chunk)
                chunks.popleft()
                offset = 0
                needed -= left
            else:
                parts.append(chunk[offset:offset + needed])
                offset += needed
                needed = 0
        self._offset = offset
        self._buffered -= size
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        with self._lock:
            self._wait_for(size)
            return self._take(size)

    def read1(self, size: int = -1) -> bytes:
        """Whatever is buffered, waiting only when nothing is."""
        with self._lock:
            self._wait_for(1)
            return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        parts = []
        wanted = size
        with self._lock:
            while wanted != 0:
                self._wait_for(1)
                take, ends_line = self._line_piece(wanted)
                if not take:
                    break
                parts.append(self._take(take))
                if ends_line:
                    break
                if wanted > 0:
                    wanted -= take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _line_piece(self, wanted: int) -> tuple[int, bool]:
        """The bytes the next piece of a line takes (at most `wanted` if >= 0),
        within the first chunk in memory (found where it lies, not copied:
        a line of 80 bytes had cost a copy of 8 KiB) or what is read ahead
        of the spool file; and whether they end the line."""
        if self._file is not None:
            chunk, start = self._read_ahead(self._file.fileno())
            end = len(chunk) if wanted < 0 else min(len(chunk), start + wanted)
        elif self._chunks:
            chunk = self._chunks[0]
            start = self._offset
            end = len(chunk) if wanted < 0 else min(len(chunk), start + wanted)
        else:
            return 0, False
        newline = chunk.find(b"\n", start, end)
        if newline < 0:
            return end - start, False
        return newline + 1 - start, True

    def _read_ahead(self, fd: int) -> tuple[bytes, int]:
        """A block of the spool file `fd` that holds the read position (read
        now once the last one is used up), and the position in it."""
        start = self._file_read - self._ahead_at
        if start >= len(self._ahead):
            self._ahead_at, start = self._file_read, 0
            self._ahead = os.pread(fd, min(_READ_AHEAD, self._file_written - self._file_read), self._file_read)
        return self._ahead, start

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._eof and self._file is None and self._cond is None:
            # Complete and in memory: the loop feeds nothing more (feed, feed_eof
            # and fail change nothing after EOF), so no lock is needed.
            self._chunks.clear()
            self._buffered = self._offset = 0
            return
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
                self._ahead = b""
            self._chunks.clear()
            self._buffered = self._offset = 0
            self._eof = True
            self._wake_readers()


class EmptyBody:
    """`wsgi.input` of a request whose FCGI_STDIN had ended, empty, when it
    started (a GET, an authorizer): answers as a complete, empty
    `RequestBody` does, without its lock and buffers."""

    received = 0
    complete = True

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def read1(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def readable(self) -> bool:
        return True

    def fail(self, error: BaseException) -> None:
        """Nothing to fail: the body is complete."""

    def close(self) -> None:
        pass
