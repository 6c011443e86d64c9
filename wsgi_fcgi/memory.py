"""A serving process's memory: the loaded app kept out of the cyclic
collector's way, glibc's malloc told to keep the memory that every request
reuses, and the resident set size the scoreboard shows."""

from __future__ import annotations

import ctypes
import gc
import os
import threading

#: glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Free memory at the top of a malloc arena is kept up to this much ...
MALLOC_TRIM_THRESHOLD = 2 << 20
#: ... and blocks from this size up are mapped on their own (returned at free).
MALLOC_MMAP_THRESHOLD = 1 << 20
#: What an operator sets to tune malloc; with any of them we keep out.
_MALLOC_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")

#: What each piece a limit holds counts for besides its bytes: the object's
#: header and its container's slot (a bytes object and a deque or list slot,
#: a name-value tuple and a list slot: 48-64 bytes).  Counting content alone
#: let a peer sending 2-byte pieces hold 7 to 36 times --max-params-size,
#: --spool-size or --output-buffer-size.
PIECE_COST = 64

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def prepare_to_serve() -> None:
    """Once the app is loaded, before the first request."""
    freeze_loaded_objects()
    keep_malloc_arenas()


def freeze_loaded_objects() -> None:
    """Once the app is loaded, its objects leave the collector's generations
    (gc.freeze): the full collections that requests' garbage triggers stop
    walking every module of the app (a Flask page: 3.7% less CPU), and a
    worker forked from a --preload master stops writing to, and so copying,
    the pages it shares with the master."""
    gc.collect()
    gc.freeze()


def keep_malloc_arenas() -> None:
    """Fixed malloc thresholds (glibc only; not when the environment tunes
    malloc).  glibc's defaults move: a request thread's arena gives its free
    top back to the kernel past 128 KiB, until a freed mapped block raises
    that bar (up to 64 MiB).  A 64 KiB POST allocates a 64 KiB block (its
    records, joined by the parser; before that join, about 128 KiB) and
    frees it: depending on what the worker freed before, its requests then
    faulted fresh pages in, or did not (0.02 to 11 page faults per request
    from one run to the next, up to a tenth of its CPU)."""
    if any(name in os.environ for name in _MALLOC_ENVIRONMENT) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):
        return  # not glibc
    mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)


class _ResidentMemory:
    """This process's resident set size in bytes (Linux /proc; 0 elsewhere).

    With --max-worker-memory it is read after every request: /proc/self/statm
    stays open, one descriptor per process, and each reading is one pread
    (opening and closing the file cost 12-14 us of a 60-80 us request).  A
    forked child opens its own: the parent's descriptor names the parent."""

    def __init__(self) -> None:
        self._fd = -1
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def __call__(self) -> int:
        fd = self._fd
        if fd < 0:
            fd = self._open()
        try:
            return int(os.pread(fd, 128, 0).split()[1]) * _PAGE_SIZE
        except (OSError, IndexError, ValueError):
            return 0

    def _open(self) -> int:
        with self._lock:
            if self._fd < 0:
                try:
                    self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return -1
            return self._fd

    def _forget(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


resident_memory = _ResidentMemory()
