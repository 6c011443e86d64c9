"""Idle connections handed from a stopping worker to a live one of the same pool.

Closing a kept connection is never safe: the web server may be writing a new
request on it at that very moment, and nginx does not retry a POST that
failed that way (502).  So a worker that stops (recycling, reload) passes its
idle kept connections to the other workers instead: the file descriptor goes
over a datagram socket pair that every worker inherits from the master
(SCM_RIGHTS), and whichever live worker reads it first serves the connection
from then on.  Bytes the web server wrote meanwhile wait in the kernel.
The queue holds some 280 connections (the socket's send buffer); a stopping
worker with more keeps the rest until the live ones have taken some
(`EventLoop.hand_over`).

Only when the whole pool stops (`close_pool`) are kept connections closed.
"""

from __future__ import annotations

import mmap
import socket


class Handoff:
    def __init__(self) -> None:
        self.sender, self.receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sender.setblocking(False)
        self.receiver.setblocking(False)
        self._closed = mmap.mmap(-1, 1)  # shared with the workers forked later: 1 = the pool stops

    @property
    def open(self) -> bool:
        return self._closed[0] == 0

    def close_pool(self) -> None:
        """The whole pool stops: nobody will adopt connections any more."""
        self._closed[0] = 1

    def send(self, sock: socket.socket) -> bool:
        """Hand `sock` over (the caller then closes its own copy).  False if
        the pool stops or the queue of handed connections is full."""
        if not self.open:
            return False
        try:
            socket.send_fds(self.sender, [b"c"], [sock.fileno()])
        except OSError:
            return False
        return True

    def receive(self, limit: int = 64) -> list:
        sockets = []
        for _ in range(limit):
            try:
                _, fds, _, _ = socket.recv_fds(self.receiver, 16, 4)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            sockets.extend(socket.socket(fileno=fd) for fd in fds)
        return sockets

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()
