"""The scoreboard: one fixed-size slot per worker process in shared memory.

The master creates an anonymous shared `mmap` before forking, so every
worker sees the same pages.  Each worker writes only its own slot (its
heartbeat, counters and the request it runs now); the master reads the
heartbeats, and the status page, served by whichever worker gets the
request, reads all slots.  No lock: a slot is rewritten whole with one
`pack_into`, and a status page that reads a slot mid-write at worst shows a
counter one request old.
"""

from __future__ import annotations

import mmap
import operator
import struct
import time
from dataclasses import dataclass, fields
from typing import Iterator, Optional

#: slot states
FREE, STARTING, READY, RETIRING, STOPPING = range(5)
STATE_NAMES = {FREE: "free", STARTING: "starting", READY: "ready", RETIRING: "retiring", STOPPING: "stopping"}

_HEADER = struct.Struct("=d")  # the master's start time (wall clock)
_SLOT = struct.Struct("=iiBxxxddQQQIIId16s240s")
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
    method: bytes = b""
    uri: bytes = b""

    @property
    def state_name(self) -> str:
        if self.state == READY:
            return "busy" if self.active else "idle"
        return STATE_NAMES.get(self.state, "unknown")

    def request_age(self, now: Optional[float] = None) -> Optional[float]:
        if not self.request_since:
            return None
        return max(0.0, (now or time.monotonic()) - self.request_since)


_FIELDS = [f.name for f in fields(Slot)]
_SLOT_VALUES = operator.attrgetter(*_FIELDS)  # written at every request end: kept cheap


class Scoreboard:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.memory = mmap.mmap(-1, _HEADER.size + slots * _SLOT.size)  # MAP_SHARED|MAP_ANONYMOUS
        _HEADER.pack_into(self.memory, 0, time.time())

    @property
    def started(self) -> float:
        return _HEADER.unpack_from(self.memory, 0)[0]

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

    def workers(self) -> Iterator[Slot]:
        """The live workers' slots, in slot order."""
        for index in range(self.slots):
            slot = self.read(index)
            if slot.pid and slot.state != FREE:
                yield slot
