"""The selector loop of one process: accepting, reading, flushing, timers, stopping.

Exactly one thread runs it at a time (see pool.py for the hand-off between
the loop thread and the standby).  Other threads never touch the selector:
they queue what they need (`notify`, `want_write`) and `wake` the loop.
Every callback runs under one guard: an exception is logged at ERROR with
its traceback and costs only the connection it came from.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import selectors
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .channel import CLOSED, CLOSING, DRAIN_TIMEOUT, DRAINING, LOST, OPEN, Channel

if TYPE_CHECKING:
    from .handoff import Handoff
    from .listeners import PeerFilter
    from .scoreboard import ConnectionShare
    from .server import Server

log = logging.getLogger("wsgi_fcgi")

RECV_SIZE = 256 * 1024
TICK = 1.0
_ACCEPTS_PER_EVENT = 16
#: How long a worker leaves new connections to one holding fewer (ConnectionShare)
#: before it takes those still waiting: that worker was woken for them too, but
#: may be busy (its loop waits for its GIL), stopped or stuck.  Meanwhile it
#: looks again every STAND_ASIDE_CHECK: once the other holds as many, it takes
#: its share of a burst of connections.
STAND_ASIDE = 0.01
STAND_ASIDE_CHECK = 0.001


class EventLoop:
    def __init__(self, server: Server, sockets: list, peers: PeerFilter, handoff: Handoff | None) -> None:
        self.server = server
        self.sockets = sockets
        self.peers = peers
        self.handoff = handoff
        self.max_connections = server.settings["max_connections"]
        self.selector = selectors.DefaultSelector()
        # recv into one reused buffer: a fresh 256 KiB bytes per recv() would
        # cost an mmap/mremap/munmap per request.
        self.recv_view = memoryview(bytearray(RECV_SIZE))
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self.channels: dict[int, Channel] = {}
        self._interest: dict[int, int] = {}  # selector events per registered channel fd
        self.ready: collections.deque = collections.deque()  # requests to run, filled this round
        self._attention: collections.deque = collections.deque()  # channels other threads flagged
        self._write_wanted: collections.deque = collections.deque()
        self._awaiting_handoff: dict[Channel, None] = {}  # idle, closing: handed over once the queue has room
        self.accepting = False
        self._accept_again_at = 0.0  # after EMFILE and the like: not before then
        self.share: ConnectionShare | None = None  # in a pool of workers: set by the worker
        self._aside_until = 0.0  # standing aside for a worker holding fewer connections: until then
        # a request with FCGI_KEEP_CONN set came, one with it clear (ConnectionShare)
        self.kept_noted = self.not_kept_noted = False
        self.stop_at: float | None = None  # graceful stop deadline
        self._stop_handoff = False
        self.stopping = False
        self.done = False
        self.connections_accepted = 0
        self.next_tick = time.monotonic() + TICK
        self.on_tick: list[Callable[[], None]] = []
        self.report_at = math.inf  # when the on_report hooks are due (report_by)
        self.on_report: list[Callable[[], None]] = []
        self._timers: list[list] = []  # [due, interval, callback] (call_every)
        self._next_timer = math.inf
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

    # -- other threads -------------------------------------------------------------------

    def wake(self) -> None:
        if self._woken:
            return
        self._woken = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # the pipe is full (the loop will wake anyway) or closed

    def notify(self, channel: Channel) -> None:
        """`channel` needs the loop's attention (state change, ended requests)."""
        self._attention.append(channel)
        self.wake()

    def want_write(self, channel: Channel) -> None:
        """`channel` has queued output: watch it for writability."""
        self._write_wanted.append(channel)
        self.wake()

    def report_by(self, when: float, wake: bool) -> None:
        """Run the `on_report` hooks at `when` at the latest.  `wake`: the
        caller is not the thread running the loop, which may be asleep in
        the selector until its next tick."""
        if when < self.report_at:
            self.report_at = when
            if wake:
                self.wake()

    def call_every(self, interval: float, callback: Callable[[], None]) -> None:
        """Call `callback` in the loop every `interval` seconds: for a hook
        that needs a finer clock than the tick's second.  Before the loop
        runs (the thread that will run it)."""
        due = time.monotonic() + interval
        self._timers.append([due, interval, callback])
        self._next_timer = min(self._next_timer, due)

    def stop(self, deadline: float, handoff: bool) -> None:
        if self.stop_at is None or deadline < self.stop_at:
            self.stop_at = deadline
        self._stop_handoff = handoff
        self.wake()

    # -- running --------------------------------------------------------------------------

    def start_accepting(self) -> None:
        for sock in self.sockets:
            self.selector.register(sock, selectors.EVENT_READ, lambda _mask, s=sock: self._accept(s))
        if self.handoff is not None:
            self.selector.register(self.handoff.receiver, selectors.EVENT_READ, self._adopt)
        self.accepting = True
        self._publish_connections()

    def _stop_accepting(self) -> None:
        if self.accepting:
            self.accepting = False
            for sock in self.sockets:
                self._unregister_fd(sock)
            if self.handoff is not None:
                self._unregister_fd(self.handoff.receiver)
        self._publish_connections()

    def _publish_connections(self) -> None:
        """What the pool's other workers count on: the connections this one
        holds, and whether it takes new ones: not while busy, full or
        stopping; still while it stands aside (else the others would take
        all of a burst)."""
        if self.share is not None:
            held = len(self.channels)
            self.share.publish(held, held if self.accepting or self._aside_until > 0 else -1)

    def note_keep_conn(self, kept: bool) -> None:
        """The first request with FCGI_KEEP_CONN set (`kept`), or clear (loop
        thread): whether the pool shares its connections out."""
        if kept:
            self.kept_noted = True
        else:
            self.not_kept_noted = True
        if self.share is not None:
            self.share.note_keep_conn(kept)

    def _unregister_fd(self, sock) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def run(self, inline: bool) -> bool:
        """Run until the server stops (True) or this thread loses the selector
        (False): the loop thread to the standby while it runs a long request,
        the standby back to the loop thread."""
        pool = self.server.pool
        select = self.selector.select
        while True:
            # Before reading: a stop asked for by the request just run (a
            # worker retiring) sees its kept connections idle and hands them
            # over, the next request left unread in them.
            if self.stop_at is not None and self._stopped(time.monotonic()):
                self.done = True
                pool.loop_finished()
                return True
            timeout = min(self.next_tick, self.report_at, self._next_timer) - time.monotonic()
            for key, mask in select(timeout if timeout > 0 else 0):
                try:
                    key.data(mask)
                except Exception:
                    self._callback_failed(key.data)
            now = time.monotonic()
            if self._attention or self._write_wanted:
                self._attend(now)
            if now >= self.report_at:
                self.report_at = math.inf  # before the hooks: a later report_by is not lost
                self._call_hooks(self.on_report, "report")
            if now >= self.next_tick:  # on the loop, not per run(): the selector may change hands often
                self.next_tick = now + TICK
                self._tick(now)
            if now >= self._next_timer:
                self._run_timers(now)
            if self.ready and not pool.dispatch(self.ready, inline):
                return False
            if not self.accepting:
                self._resume_accepting(now)
            if pool.loop_wanted and not inline:
                pool.give_loop_back()
                return False

    def _callback_failed(self, callback) -> None:
        """Every exception in the loop ends here: logged with its traceback,
        and only the connection it came from is lost."""
        channel = getattr(callback, "__self__", None)
        log.exception("internal error in the I/O loop%s", " on %r" % channel if channel else "")
        if isinstance(channel, Channel):
            channel.lose("internal error")

    def _stopped(self, now: float) -> bool:
        if not self.stopping:
            self._begin_stop(now)
        return now >= self.stop_at or (not self.server.live_requests() and not self.channels)  # type: ignore

    # -- wake-ups and attention ---------------------------------------------------------

    def _on_wake(self, _mask: int) -> None:
        # Drain, then clear.  A wake() in between finds the flag set and
        # sends nothing, and the loop sees its request anyway: every reason
        # to wake (the attention lists, a stop, a report deadline, the
        # standby's hand-back) is looked at after the callbacks.  Cleared
        # first, a wake() in between had its byte drained with the flag left
        # set: every later wake() was lost, and the loop slept until events
        # or its tick (a queued END_REQUEST waited up to a second).
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._woken = False

    def _attend(self, now: float) -> None:
        while self._write_wanted:
            channel = self._write_wanted.popleft()
            if channel.state is not CLOSED:
                channel.on_writable()
        attention = self._attention
        while attention:
            channel = attention.popleft()
            if channel.state is CLOSED:
                continue
            channel.reap_finished()
            if channel.state is LOST:
                channel.close()
                continue
            if channel.state is DRAINING and channel.peer_closed and not channel.output.pending:
                channel.close()
                continue
            if channel.deferred:
                self.server.run_deferred(channel)
            if channel.state is CLOSING:
                channel.finish_closing(now)
        self.server.run_body_waiters()

    def update_interest(self, channel: Channel) -> None:
        """Watch for input unless the peer closed; for writability while output is queued."""
        events = 0 if channel.peer_closed else selectors.EVENT_READ
        if channel.output.pending:
            events |= selectors.EVENT_WRITE
        fd = channel.fileno
        current = self._interest.get(fd, 0)
        if events == current:
            return
        # Reading only (nearly always): straight to on_readable, one call less.
        callback = channel.on_readable if events == selectors.EVENT_READ else channel.on_event
        if not events:
            self._unregister_fd(channel.sock)
            del self._interest[fd]
        elif not current:
            self.selector.register(channel.sock, events, callback)
            self._interest[fd] = events
        else:
            self.selector.modify(channel.sock, events, callback)
            self._interest[fd] = events

    # -- connections ---------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        self._take_connections(lambda: self._accept_one(listener))

    def _adopt(self, _mask: int) -> None:
        """Connections another worker of the pool handed over (it is stopping)."""
        self._take_connections(self._adopt_one)

    def _take_connections(self, take_one: Callable[[], bool], shared: bool = True) -> None:
        """Up to _ACCEPTS_PER_EVENT connections (`take_one`: False when none
        is left), while there is room for them: a busy worker leaves new and
        handed-over connections alike to the others (a worker that adopted
        every connection of a stopping one would answer 503 past --max-queue
        while the others idle), and so does, for STAND_ASIDE at most, one
        holding more connections than another (`shared`)."""
        for _ in range(_ACCEPTS_PER_EVENT):
            now = time.monotonic()
            if not self._may_accept(now):
                self._stop_accepting()  # they wait in the listen backlog or the hand-off queue
                return
            if shared and not self._my_turn():
                self._stand_aside(now)
                return
            if not take_one():
                return

    def _my_turn(self) -> bool:
        return self.share is None or self.share.my_turn(len(self.channels))

    def _stand_aside(self, now: float) -> None:
        self._aside_until = now + STAND_ASIDE
        self._stop_accepting()

    def _take_unclaimed(self) -> None:
        """The connections still waiting when this worker's STAND_ASIDE is
        over: the worker holding fewer did not take them."""
        for sock in self.sockets:
            self._take_connections(lambda s=sock: self._accept_one(s), shared=False)
        if self.handoff is not None:
            self._take_connections(self._adopt_one, shared=False)

    def _accept_one(self, listener: socket.socket) -> bool:
        try:
            sock, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.error("cannot accept a connection: %s; pausing accepts for a second", exc)
                self._accept_again_at = time.monotonic() + 1.0
                self._stop_accepting()
            return False
        if not self.peers.allows(peer):
            log.warning("refused a connection from %s: not in --allowed-servers", peer[0])
            sock.close()
            return True
        self.add_channel(sock, peer)
        return True

    def _adopt_one(self) -> bool:
        handed = self.handoff.receive(limit=1)  # type: ignore[union-attr]
        if not handed:
            return False
        sock = handed[0]
        try:
            peer = sock.getpeername()
        except OSError:  # closed by the web server on its way here
            sock.close()
            return True
        self.add_channel(sock, peer, adopted=True)
        return True

    def _may_accept(self, now: float) -> bool:
        """Room for one more connection: under --max-connections, not right
        after running out of file descriptors, and (in a pool of workers) a
        thread free: a busy worker leaves new connections to the others, as
        php-fpm's children do, unless it is needed."""
        if len(self.channels) >= self.max_connections or now < self._accept_again_at:
            return False
        return not self.server.all_threads_busy() or self._needed_though_busy()

    def _needed_though_busy(self) -> bool:
        """No other worker takes new connections (ConnectionShare.another_takes_them),
        and this one holds fewer than --max-queue: past that they wait in the
        listen backlog for the first worker with a thread free, as before,
        rather than bring more requests than the queue holds (a web server
        sends one request at a time on a connection), each over answered 503."""
        return (self.share is not None and not self.share.another_takes_them()
                and len(self.channels) < self.server.max_queue)

    def _resume_accepting(self, now: float) -> None:
        """Accept again once the reason to pause is gone (checked every loop round)."""
        if self.stop_at is not None or self.done:
            return
        if not self._may_accept(now):
            if self._aside_until:  # busy or full now: no more standing aside, not taking
                self._aside_until = 0.0
                self._publish_connections()
            return
        if self._aside_until:
            if now < self._aside_until and not self._my_turn():
                self._next_timer = min(self._next_timer, now + STAND_ASIDE_CHECK)  # a round then, to look again
                return
            unclaimed = now >= self._aside_until and not self._my_turn()
            self._aside_until = 0.0
            if unclaimed:
                self._take_unclaimed()
                if not self._may_accept(time.monotonic()):
                    return
        self.start_accepting()

    def add_channel(self, sock: socket.socket, peer, adopted: bool = False) -> Channel:
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        channel = Channel(self.server, sock, peer if isinstance(peer, tuple) else None)
        if adopted:
            channel.had_request = True  # it served requests in another worker
        self.channels[channel.fileno] = channel
        self.update_interest(channel)
        self.connections_accepted += 1
        self._publish_connections()
        if self.stopping:
            channel.close_when_idle("server stopping", handoff=self._stop_handoff)
        return channel

    def unregister(self, channel: Channel) -> None:
        if self.channels.get(channel.fileno) is channel:
            del self.channels[channel.fileno]
            self._publish_connections()
            if self._interest.pop(channel.fileno, None) is not None:
                self._unregister_fd(channel.sock)

    def hand_over(self, channel: Channel) -> bool:
        """Pass an idle connection of a stopping worker to a live one of the
        pool.  False: it is still ours (and still watched); while the pool
        lives, that is because the queue of handed connections is full (some
        280 of them), and the connection is handed over once the live
        workers have taken most of them (Linux reports the sending end
        writable below a quarter of its buffer): closing it instead would
        bring back the race that handing it over avoids."""
        if self.handoff is None:
            return False
        if not self.handoff.send(channel.sock):
            if self.handoff.open:
                self._await_handoff_room(channel)
            return False
        self._awaiting_handoff.pop(channel, None)
        self.unregister(channel)
        return True

    def awaits_handoff(self, channel: Channel) -> bool:
        return channel in self._awaiting_handoff

    def _await_handoff_room(self, channel: Channel) -> None:
        if not self._awaiting_handoff:
            # Writable again once a live worker took some off the queue.
            self.selector.register(self.handoff.sender, selectors.EVENT_WRITE,  # type: ignore[union-attr]
                                   self._hand_over_awaiting)
        self._awaiting_handoff[channel] = None

    def _hand_over_awaiting(self, _mask: int) -> None:
        # The sender is watched while connections wait: a retry that finds
        # the queue full again (other stopping workers filled it) waits, and
        # watches, anew.
        self._unregister_fd(self.handoff.sender)  # type: ignore[union-attr]
        waiting, self._awaiting_handoff = self._awaiting_handoff, {}
        now = time.monotonic()
        for channel in waiting:
            if channel.state is CLOSING:
                channel.finish_closing(now)

    # -- timers and stopping -----------------------------------------------------------------

    def _tick(self, now: float) -> None:
        for channel in list(self.channels.values()):
            try:
                self._check_timers(channel, now)
            except Exception:
                self._callback_failed(channel.on_event)
        self._call_hooks(self.on_tick, "tick")

    def _run_timers(self, now: float) -> None:
        for timer in self._timers:
            due, interval, callback = timer
            if now >= due:
                timer[0] = now + interval
                self._call_hooks([callback], "timer")
        self._next_timer = min((timer[0] for timer in self._timers), default=math.inf)

    @staticmethod
    def _call_hooks(hooks: list[Callable[[], None]], kind: str) -> None:
        for callback in hooks:
            try:
                callback()
            except Exception:
                log.exception("error in a %s hook", kind)

    def _check_timers(self, channel: Channel, now: float) -> None:
        settings = self.server.settings
        channel.reap_finished()
        state = channel.state
        if state is DRAINING:
            if now - channel.state_since > DRAIN_TIMEOUT or (channel.peer_closed and not channel.output.pending):
                channel.close()
            elif channel.output.stalled_for(now) > DRAIN_TIMEOUT:
                channel.lose("peer does not read")
            return
        if state is LOST:
            channel.close()
            return
        write_timeout = settings["write_timeout"]
        stalled = channel.output.stalled_for(now)
        if write_timeout and stalled > write_timeout:
            log.info("%r: the peer did not read our output for %.0f s (--write-timeout), dropping it",
                     channel, stalled)
            channel.lose("write timeout")
            return
        if channel.record_started is not None and now - channel.record_started > settings["read_timeout"]:
            log.info("%r: a record incomplete after %.0f s (--read-timeout), closing", channel,
                     now - channel.record_started)
            channel.lose("read timeout")
            return
        if settings["body_timeout"]:
            self.server.check_body_deadlines(channel, now)
        if state is CLOSING:
            channel.finish_closing(now)
        elif state is OPEN and channel.idle() and settings["keep_alive"] \
                and now - channel.idle_since > settings["keep_alive"]:
            log.debug("%r: idle for %.0f s (--keep-alive), closing", channel, now - channel.idle_since)
            channel.close_when_idle("keep-alive timeout")
            channel.finish_closing(now)

    def _begin_stop(self, now: float) -> None:
        self.stopping = True
        self._aside_until = 0.0  # taking none from now on, which the others must know
        self._stop_accepting()
        for channel in list(self.channels.values()):
            if channel.state is OPEN or channel.state is CLOSING:
                channel.close_when_idle("server stopping", handoff=self._stop_handoff)
                channel.finish_closing(now)

    def close(self) -> None:
        """After the loop ended: close every connection and the selector."""
        self._stop_accepting()
        for channel in list(self.channels.values()):
            channel.close_reason = channel.close_reason or "server stopping"
            channel.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
