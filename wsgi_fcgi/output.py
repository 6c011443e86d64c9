"""The write side of one connection: a bounded output queue on a non-blocking socket.

Any thread may write; no send ever blocks.  A write goes straight to the
kernel when nothing is queued (the common case: a whole small response in one
`send`), and what the kernel does not take is queued.  The loop thread then
watches the socket for writability and flushes the queue.

Writing behind: `write_behind_locked` only queues, and the loop thread
sends what was queued by then in one write.  A request thread streaming
small chunks uses it (Channel decides when), so that a burst of chunks is
one system call, not one each; the chunk that ends such a response
flushes the queue (`flush_locked`) without waiting for the loop.

Back-pressure: a request thread streaming a response waits while more than
`limit` bytes are queued (each part counted memory.PIECE_COST bytes more): it
polls its socket for writability with the lock released and flushes the
queue itself, down to half the limit (it relies on no other thread: the
loop thread may be the one writing).  Progress is timed:
the loop drops a connection whose queue made no progress for
--write-timeout, and `fail_locked()` wakes every waiting writer at once (a
shutdown of the socket ends their poll), which then gives up.

Locking rule: `lock` is held only around non-blocking socket calls and queue
updates, never while waiting for the peer, so the loop thread can always take
it without delay.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable

from .memory import PIECE_COST

Buffer = bytes | memoryview
#: what may be written: bytes, or a list of buffers sent with one sendmsg()
Data = Buffer | list[Buffer]

#: a send that took nothing now, and may take more later
_TRY_LATER = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR))

#: sendmsg() takes at most this many buffers (Linux UIO_MAXIOV is 1024).
_IOV_MAX = 1000


def _send_function_keeping_the_gil() -> Callable[[int, bytes], int] | None:
    """send(2) called without releasing the GIL, or None where libc's send
    cannot be had.

    socket.send() releases the GIL around the system call, and a thread
    that releases it while others wait hands it over: it must win it back
    after the call (the convoy effect, bpo-7946).  Eight threads streaming
    small chunks paid a context switch a chunk for it, 40% of the worker's
    CPU.  A send on a non-blocking socket never waits, so keeping the GIL
    for its few microseconds is cheaper than the handover.  Only for small
    bytes (a small response, a streamed chunk: _KEEP_THE_GIL_UP_TO); larger
    writes copy long enough to be worth releasing it."""
    try:
        send = ctypes.PyDLL(None, use_errno=True).send  # PyDLL: the GIL is kept during the call
    except (OSError, AttributeError):
        return None
    send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
    send.restype = ctypes.c_ssize_t
    flags = getattr(socket, "MSG_NOSIGNAL", 0)  # an EPIPE, not a SIGPIPE, when the peer is gone

    def send_keeping_the_gil(fd: int, data: bytes) -> int:
        sent: int = send(fd, data, len(data), flags)
        if sent < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        return sent

    return send_keeping_the_gil


_send_keeping_the_gil = _send_function_keeping_the_gil()
#: the largest write sent keeping the GIL (a small response is framed as bytes below 32 KiB)
_KEEP_THE_GIL_UP_TO = 64 * 1024


#: What a queue the loop thread flushes costs, in sends: its wake-up, the selector's return and the
#: GIL changing hands (Channel._write_chunk_locked writes behind while chunks pay for it).
QUEUE_COST = 4


def _nothing() -> None:
    pass


class Output:
    def __init__(self, sock: socket.socket, limit: int, on_backlog: Callable[[], None]) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.limit = limit
        self.on_backlog = on_backlog  # asks the loop to flush when writable (called under the lock)
        self._queue: collections.deque[Buffer] = collections.deque()  # bytes / memoryviews not yet sent
        self.pending = 0  # bytes in _queue
        self.progress = 0.0  # monotonic time of the last bytes the kernel took while some were queued
        self.failed: str | None = None  # why nothing can be written any more
        self.fin_after_flush = False  # shut the write side down once the queue is empty
        self.fin_sent = False
        self._waiters = 0  # threads in wait_locked
        # bytes go out keeping the GIL only on a non-blocking socket: there the send cannot wait
        self._keep_the_gil = _send_keeping_the_gil is not None and sock.gettimeout() == 0.0

    # -- under the lock (callers hold `lock`) -------------------------------------------

    def write_locked(self, data: Data) -> bool:
        """Send `data` (bytes, or a list of buffers) now, queue what the kernel does
        not take.  False if the connection cannot be written any more."""
        if self.failed is not None:
            return False
        if self._queue:
            self._enqueue(data, 0)
            return True
        if type(data) is bytes:  # the common case: a whole small response
            sent = self._send(data)
            if sent is None:
                return False
            if sent < len(data):
                self._enqueue(data, sent)
            return True
        if not isinstance(data, list):
            data = [data]
        start = 0
        while start < len(data):
            batch = data[start:start + _IOV_MAX]
            sent = self._send(batch)
            if sent is None:
                return False
            if sent < sum(map(len, batch)):
                self._enqueue(data[start:], sent)
                break
            start += _IOV_MAX
        return True

    def write_behind_locked(self, data: Data) -> bool:
        """Queue `data` for the loop thread to send, with whatever else is
        queued by then.  False if the connection cannot be written any more."""
        if self.failed is not None:
            return False
        self._enqueue(data, 0)
        return True

    def flush_locked(self) -> bool:
        """Send what the kernel takes of the queue now, rather than when the
        loop thread gets to it.  False if the connection failed."""
        self._flush_locked()
        return self.failed is None

    def _send(self, data: bytes | list[Buffer]) -> int | None:
        """What the kernel takes of `data` now; None if the socket failed."""
        try:
            if not isinstance(data, bytes):
                return self.sock.sendmsg(data)
            if self._keep_the_gil and len(data) <= _KEEP_THE_GIL_UP_TO:
                # fileno() at each send, never kept: a closed socket's is -1 (EBADF), where a
                # kept number could by then be another connection's
                return _send_keeping_the_gil(self.sock.fileno(), data)  # type: ignore[misc]
            return self.sock.send(data)
        except OSError as exc:
            if exc.errno in _TRY_LATER:
                return 0
            self.fail_locked("write failed: %s" % (exc.strerror or exc))
            return None

    def _enqueue(self, data: Data, skip: int) -> None:
        for part in (data if isinstance(data, list) else (data,)):
            size = len(part)
            if skip >= size:
                skip -= size
                continue
            if skip:
                part = memoryview(part)[skip:]
                size -= skip
                skip = 0
            self._queue.append(part)
            self.pending += size
        if self.pending and not self.progress:
            self.progress = time.monotonic()
            self.on_backlog()

    def wait_locked(self) -> bool:
        """Back-pressure for a thread streaming a response: while more than the
        limit is queued, wait for the socket to take more (the lock released
        meanwhile) and flush it, until the queue is back under half the limit.
        The waiting thread flushes itself: it depends on no other thread (the
        loop thread may be the one writing).  False if the connection failed
        meanwhile: `fail_locked` wakes every waiting writer at once."""
        if self.held <= self.limit or self.failed is not None:
            return self.failed is None
        poller = select.poll()
        poller.register(self.sock, select.POLLOUT)
        self._waiters += 1
        try:
            while self.held > self.limit // 2 and self.failed is None:
                self.lock.release()
                try:
                    poller.poll(1000)
                finally:
                    self.lock.acquire()
                if self.failed is None:
                    self._flush_locked()
        finally:
            self._waiters -= 1
        return self.failed is None

    def shutdown_locked(self) -> None:
        """FIN once everything queued is out: straight away if nothing is."""
        if self.failed is not None or self.fin_sent:
            return
        if self._queue:
            self.fin_after_flush = True
            return
        self.fin_sent = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.fail_locked("shutdown failed: %s" % (exc.strerror or exc))

    def fail_locked(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
        # Nothing is queued from now on: drop the callback, which refers to
        # the connection, so a closed connection is freed without the cyclic GC.
        self.on_backlog = _nothing
        self._queue.clear()
        self.pending = 0
        self.progress = 0.0
        if self._waiters:  # writers polling this socket: wake them now
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def held(self) -> int:
        """What the queue holds: its bytes, and PIECE_COST for each part."""
        return self.pending + PIECE_COST * len(self._queue)

    @property
    def backlogged(self) -> bool:
        """More than the limit is queued (a reader of this connection is slow)."""
        return self.pending + PIECE_COST * len(self._queue) > self.limit  # self.held, one call less

    # -- loop thread ----------------------------------------------------------------

    def flush(self) -> bool:
        """Send what the kernel takes now.  True when the queue is empty (or failed)."""
        with self.lock:
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        queue = self._queue
        sent_any = False
        while queue:
            if self.pending <= _KEEP_THE_GIL_UP_TO and self._keep_the_gil:
                # A small queue (most often chunks written behind) goes out joined, in one send
                # that keeps the GIL: the loop thread flushes it, and each release of the GIL while
                # an app computes costs the loop a switch interval (5 ms) to take it back.
                parts: bytes | list[Buffer] = b"".join(queue)
            else:
                parts = list(queue) if len(queue) <= _IOV_MAX else [queue[i] for i in range(_IOV_MAX)]
            sent = self._send(parts)
            if sent is None:
                return True
            if not sent:
                break
            sent_any = True
            self.pending -= sent
            while sent:
                size = len(queue[0])
                if sent >= size:
                    queue.popleft()
                    sent -= size
                else:
                    queue[0] = memoryview(queue[0])[sent:]
                    sent = 0
        if sent_any:
            self.progress = time.monotonic() if queue else 0.0
        if not queue and self.fin_after_flush:
            self.fin_after_flush = False
            self.shutdown_locked()
        return not queue

    def stalled_for(self, now: float) -> float:
        """Seconds since the queue last made progress (0 when nothing is queued)."""
        progress = self.progress
        return now - progress if progress and self.pending else 0.0
