"""The scoreboard: one fixed-size slot per worker process in shared memory.

The master creates an anonymous shared `mmap` before forking, so every
worker sees the same pages.  Each worker writes only its own slot (its
heartbeat, counters and the request it runs now); the master reads the
heartbeats, and the status page, served by whichever worker gets the
request, reads all slots.  No lock: a slot is rewritten whole with one
`pack_into`, and a status page that reads a slot mid-write at worst shows a
counter one request old.

Request counters live in two areas of their own after the slots: one
`Counters` block per slot, written by its worker after its requests end, and
the pool totals, written only by the master when it reaps a worker: it adds
the dead worker's last published counters to the totals and clears its slot,
so a pool's `_total` figures never go down across recycling, reloads and
crashes.  A sequence number around that fold lets readers retry instead of
counting a worker twice or not at all.
"""

from __future__ import annotations

import bisect
import functools
import mmap
import operator
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields

#: slot states
FREE, STARTING, READY, RETIRING, STOPPING = range(5)
STATE_NAMES = {FREE: "free", STARTING: "starting", READY: "ready", RETIRING: "retiring", STOPPING: "stopping"}
#: a worker's slot before it said READY: forked (FREE until its first write) and loading the app
LOADING = (FREE, STARTING)

#: the master's start time (wall clock), then the pool as the master runs it:
#: its --pm mode, the most workers it may run, how often it wanted more than that
_HEADER = struct.Struct("=dIIQ")
PM_MODES = ("static", "dynamic", "ondemand")
_SLOT = struct.Struct("=iiBxxxddQQQIIIddQ16s240s")
METHOD_SIZE = 16
URI_SIZE = 240


@dataclass
class Slot:
    """What one worker publishes.  Times: `started` is wall clock (for people),
    `heartbeat` and `request_since` are `time.monotonic()`, which on Linux is
    one clock for all processes."""

    pid: int = 0
    generation: int = 0
    state: int = FREE
    started: float = 0.0
    heartbeat: float = 0.0
    requests: int = 0
    slow_requests: int = 0
    timed_out: int = 0
    active: int = 0
    threads: int = 0
    max_active: int = 0
    request_since: float = 0.0  # when the oldest running request started; 0 when idle
    idle_since: float = 0.0  # when its last request ended (or it became ready); 0 while one runs
    rss: int = 0  # resident memory in bytes, as of the last tick
    method: bytes = b""
    uri: bytes = b""

    @property
    def state_name(self) -> str:
        if self.state == READY:
            return "busy" if self.active else "idle"
        return STATE_NAMES.get(self.state, "unknown")

    def request_age(self, now: float | None = None) -> float | None:
        if not self.request_since:
            return None
        return max(0.0, (now or time.monotonic()) - self.request_since)


_FIELDS = [f.name for f in fields(Slot)]
_SLOT_VALUES = operator.attrgetter(*_FIELDS)  # written after requests end: kept cheap


#: request-duration histogram: upper bounds of the buckets in seconds (then +Inf)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: responses are counted by class, "none" when no status was sent
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
#: ... and by code for these; 499: the web server aborted the request before a status
STATUS_CODES = (200, 301, 302, 304, 400, 403, 404, 408, 413, 431, 499, 500, 502, 503, 504)
COUNTER_NAMES = (("requests", "slow_requests", "timed_out", "bytes_in", "bytes_out")
                 + tuple("class_" + name for name in STATUS_CLASSES)
                 + tuple("code_%d" % code for code in STATUS_CODES)
                 + tuple("bucket_%d" % i for i in range(len(DURATION_BUCKETS) + 1)))
_INDEX = {name: i for i, name in enumerate(COUNTER_NAMES)}
_CODE_INDEX = {code: _INDEX["code_%d" % code] for code in STATUS_CODES}
_CLASS_INDEX = {digit: _INDEX["class_%dxx" % digit] for digit in range(1, 6)}
_NO_CLASS = _INDEX["class_none"]
_FIRST_BUCKET = _INDEX["bucket_0"]
_COUNTERS = struct.Struct("=%dQd" % len(COUNTER_NAMES))  # the counters, then the sum of durations
_SEQUENCE = struct.Struct("=Q")  # odd while the master folds a worker into the totals
#: per slot: the connections its worker holds, and the same while it takes new ones,
#: -1 while it does not (ConnectionShare); before them three words: how many
#: slots from the first have ever had a worker (the master writes it), and whether a
#: worker has seen a request with FCGI_KEEP_CONN set, and one with it clear
_CONNECTIONS = struct.Struct("=ii")
_WORD = struct.Struct("=i")
_KEEP_CONN_SEEN = struct.Struct("=ii")
_POOL_WORDS = _WORD.size + _KEEP_CONN_SEEN.size


@functools.cache
def _connections_of(slots: int) -> struct.Struct:
    return struct.Struct("=%di" % (2 * slots))


def _status_counters(status: str | None, aborted: bool) -> tuple[int, ...]:
    """The counters a response's status adds to: its class and, for the
    codes counted one by one, its code.  No status: 499 if the web server
    aborted the request, else none."""
    indexes = _status_line_counters(status) if status else None
    return indexes if indexes is not None else _code_counters(499 if aborted else 0)


@functools.lru_cache(maxsize=256)  # an app sends few status lines: each parsed once
def _status_line_counters(status: str) -> tuple[int, ...] | None:
    """None for a line without a code: its counters depend on the request."""
    return _code_counters(int(status[:3])) if status[:3].isdigit() else None


def _code_counters(code: int) -> tuple[int, ...]:
    if code in _CODE_INDEX:
        return _CLASS_INDEX.get(code // 100, _NO_CLASS), _CODE_INDEX[code]
    return (_CLASS_INDEX.get(code // 100, _NO_CLASS),)


class Counters:
    """Monotonic request counters: one worker's, or the pool's."""

    __slots__ = ("values", "duration_sum")

    def __init__(self, values=None, duration_sum: float = 0.0) -> None:
        self.values = list(values) if values is not None else [0] * len(COUNTER_NAMES)
        self.duration_sum = duration_sum

    def __getitem__(self, name: str) -> int:
        return self.values[_INDEX[name]]

    def __setitem__(self, name: str, value: int) -> None:
        self.values[_INDEX[name]] = value

    def add(self, other: Counters) -> None:
        self.values = [a + b for a, b in zip(self.values, other.values, strict=True)]
        self.duration_sum += other.duration_sum

    def count_request(self, status: str | None, aborted: bool, bytes_in: int, bytes_out: int,
                      duration: float) -> None:
        """One finished request: its status ("200 OK", None), sizes and duration."""
        values = self.values
        values[0] += 1
        for index in _status_counters(status, aborted):
            values[index] += 1
        values[3] += bytes_in
        values[4] += bytes_out
        values[_FIRST_BUCKET + bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration

    def buckets(self) -> list:
        """[(upper bound, cumulative count)], the last bound float("inf")."""
        total, out = 0, []
        for bound, count in zip(DURATION_BUCKETS + (float("inf"),), self.values[_FIRST_BUCKET:], strict=True):
            total += count
            out.append((bound, total))
        return out


def _aligned(offset: int) -> int:
    return (offset + 7) & ~7


class Scoreboard:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._totals_at = _aligned(_HEADER.size + slots * _SLOT.size)
        self._counters_at = _aligned(self._totals_at + _SEQUENCE.size + _COUNTERS.size)
        self._connections_at = _aligned(self._counters_at + slots * _COUNTERS.size)
        size = self._connections_at + _POOL_WORDS + slots * _CONNECTIONS.size
        self.memory = mmap.mmap(-1, size)  # MAP_SHARED|MAP_ANONYMOUS
        _HEADER.pack_into(self.memory, 0, time.time(), 0, 0, 0)
        for index in range(slots):
            self.set_connections(index, 0, -1)

    @property
    def started(self) -> float:
        return _HEADER.unpack_from(self.memory, 0)[0]

    def set_pool(self, mode: str, max_workers: int, max_reached: int) -> None:
        """The master: its pool mode, its --workers now, its "max workers reached" count."""
        _HEADER.pack_into(self.memory, 0, self.started, PM_MODES.index(mode), max_workers, max_reached)

    def pool(self) -> tuple:
        """(mode, max workers, times the pool reached its max), as the master set them."""
        _, mode, max_workers, max_reached = _HEADER.unpack_from(self.memory, 0)
        return PM_MODES[mode], max_workers, max_reached

    def _offset(self, index: int) -> int:
        return _HEADER.size + index * _SLOT.size

    def read(self, index: int) -> Slot:
        values = list(_SLOT.unpack_from(self.memory, self._offset(index)))
        values[-2] = values[-2].rstrip(b"\0")
        values[-1] = values[-1].rstrip(b"\0")
        return Slot(*values)

    def write(self, index: int, slot: Slot) -> None:
        values = list(_SLOT_VALUES(slot))
        values[-2] = values[-2][:METHOD_SIZE]
        values[-1] = values[-1][:URI_SIZE]
        _SLOT.pack_into(self.memory, self._offset(index), *values)

    def clear(self, index: int) -> None:
        self.write(index, Slot())
        self.write_counters(index, Counters())
        self.set_connections(index, 0, -1)

    # -- connections, for sharing them out (ConnectionShare) --------------------

    def claim(self, index: int) -> None:
        """The master, starting a worker in slot `index`: the slots a worker
        looks through for the fewest connections end after it (with 2
        workers, 2 to 4 of the 68 slots, a microsecond less per accept)."""
        if index >= self._slots_used():
            _WORD.pack_into(self.memory, self._connections_at, index + 1)

    def _slots_used(self) -> int:
        return _WORD.unpack_from(self.memory, self._connections_at)[0]

    def note_keep_conn(self, kept: bool) -> None:
        """A worker saw a request with FCGI_KEEP_CONN set (`kept`) or clear:
        each is a word of its own, written once, so none is lost to a race."""
        _WORD.pack_into(self.memory, self._connections_at + _WORD.size * (1 if kept else 2), 1)

    def keep_conn_seen(self) -> tuple[int, int]:
        """(a request with FCGI_KEEP_CONN set was seen, one with it clear was)"""
        return _KEEP_CONN_SEEN.unpack_from(self.memory, self._connections_at + _WORD.size)

    def _connections_offset(self, index: int) -> int:
        return self._connections_at + _POOL_WORDS + index * _CONNECTIONS.size

    def set_connections(self, index: int, connections: int, shared: int) -> None:
        """The connections a worker holds; `shared`: the same while it takes new ones, else -1."""
        _CONNECTIONS.pack_into(self.memory, self._connections_offset(index), connections, shared)

    def connections(self, index: int) -> int:
        return _CONNECTIONS.unpack_from(self.memory, self._connections_offset(index))[0]

    def fewest_connections_elsewhere(self, index: int) -> int:
        """The fewest connections held by another worker taking new ones; -1: none takes them."""
        values = _connections_of(self._slots_used()).unpack_from(self.memory, self._connections_offset(0))
        shared = [values[i] for i in range(1, len(values), 2) if values[i] >= 0 and i != 2 * index + 1]
        return min(shared, default=-1)

    # -- request counters ------------------------------------------------------

    def read_counters(self, index: int) -> Counters:
        *values, duration_sum = _COUNTERS.unpack_from(self.memory, self._counters_at + index * _COUNTERS.size)
        return Counters(values, duration_sum)

    def write_counters(self, index: int, counters: Counters) -> None:
        _COUNTERS.pack_into(self.memory, self._counters_at + index * _COUNTERS.size, *counters.values,
                            counters.duration_sum)

    def _sequence(self) -> int:
        return _SEQUENCE.unpack_from(self.memory, self._totals_at)[0]

    def pool_totals(self) -> Counters:
        """What the reaped workers had counted."""
        *values, duration_sum = _COUNTERS.unpack_from(self.memory, self._totals_at + _SEQUENCE.size)
        return Counters(values, duration_sum)

    def fold(self, index: int) -> Slot:
        """In the master, for a worker that has exited: add its counters to the
        pool totals and free its slot; returns the slot as the worker left it."""
        slot = self.read(index)
        totals = self.pool_totals()
        totals.add(self.read_counters(index))
        sequence = self._sequence()
        _SEQUENCE.pack_into(self.memory, self._totals_at, sequence + 1)
        _COUNTERS.pack_into(self.memory, self._totals_at + _SEQUENCE.size, *totals.values, totals.duration_sum)
        self.clear(index)
        _SEQUENCE.pack_into(self.memory, self._totals_at, sequence + 2)
        return slot

    def snapshot(self, attempts: int = 50) -> tuple:
        """(pool counters: the totals plus every live worker's, [(slot, its counters, its connections)])
        read between two folds, so that no worker is counted twice or missed."""
        for _ in range(attempts):
            before = self._sequence()
            if before % 2 == 0:
                pool = self.pool_totals()
                workers = []
                for index in range(self.slots):
                    slot = self.read(index)
                    if slot.pid and slot.state != FREE:
                        counters = self.read_counters(index)
                        pool.add(counters)
                        workers.append((slot, counters, self.connections(index)))
                if self._sequence() == before:
                    return pool, workers
            time.sleep(0.001)
        raise RuntimeError("the scoreboard's pool totals kept changing while being read")

    def workers(self) -> Iterator[Slot]:
        """The live workers' slots, in slot order."""
        for index in range(self.slots):
            slot = self.read(index)
            if slot.pid and slot.state != FREE:
                yield slot


class ConnectionShare:
    """New connections go to the worker of the pool holding the fewest.

    Every worker's loop waits on the same listening sockets: the kernel wakes
    them all for a new connection and the first to run takes it, so one
    worker held 29 of nginx's 32 kept connections (and the requests they
    carry) while the other idled.  Each worker publishes how many it holds
    while it takes new ones, and one holding more than another that takes
    them stands aside (loop.py): least connections, where php-fpm's children
    get the same by holding one each.

    Not when the web server does not keep connections (requests with
    FCGI_KEEP_CONN clear and none with it set, in any worker of the pool):
    with nginx's default of a connection per request, the workers stood
    aside for one another at every third request, for nothing (each
    connection carries one request), and served 13% fewer hello requests a
    second.  Before the first request, as nginx opens its kept connections
    in a burst, they are shared out."""

    def __init__(self, scoreboard: Scoreboard, index: int) -> None:
        self.scoreboard = scoreboard
        self.index = index
        self._held = self._shared = -2  # as published: none yet
        self._kept = False  # the pool has seen a kept connection: shared out from then on

    def note_keep_conn(self, kept: bool) -> None:
        self.scoreboard.note_keep_conn(kept)

    def _sharing(self) -> bool:
        if not self._kept:
            kept, not_kept = self.scoreboard.keep_conn_seen()
            if not kept:
                return not not_kept
            self._kept = True
        return True

    def publish(self, held: int, shared: int) -> None:
        """The connections this worker holds; `shared`: the same while it
        takes new ones, else -1."""
        if held != self._held or shared != self._shared:
            self._held, self._shared = held, shared
            self.scoreboard.set_connections(self.index, held, shared)

    #: connections a worker may hold beyond the fewest before it stands aside:
    #: with none, a burst (nginx opening its kept connections) flips between
    #: the workers at every connection, each flip a wait of up to
    #: loop.STAND_ASIDE_CHECK
    SLACK = 1

    def another_takes_them(self) -> bool:
        """Another worker takes new connections; True where none are shared out.

        A worker whose threads are all busy leaves new connections to the
        others, but not when none takes them (all busy, full or stopping): a
        connection left in the listen backlog then waits until a worker's live
        requests fall below its threads, and kept connections sending
        requests back to back kept both of 2 workers above it for half a
        second while 10 of nginx's 32 new connections waited (a Flask page,
        `wrk -c32`).  Accepted, its requests queue for the next free thread."""
        fewest = self._fewest_elsewhere()
        return fewest is None or fewest >= 0

    def my_turn(self, connections: int) -> bool:
        """No other worker taking new connections holds fewer than `connections` - SLACK."""
        if connections <= self.SLACK:
            return True  # nobody holds fewer than none: the scoreboard need not be read
        fewest = self._fewest_elsewhere()
        return fewest is None or fewest < 0 or connections <= fewest + self.SLACK

    def _fewest_elsewhere(self) -> int | None:
        """Scoreboard.fewest_connections_elsewhere (-1: no other worker takes
        new connections); None where the pool shares none out."""
        return self.scoreboard.fewest_connections_elsewhere(self.index) if self._sharing() else None
