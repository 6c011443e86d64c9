"""memory.resident_memory: one open /proc/self/statm per process, read with
pread; a forked child reads its own, not its parent's."""

import os

from wsgi_fcgi.memory import resident_memory


def _touched(mib):
    block = bytearray(mib << 20)
    block[::4096] = b"x" * len(block[::4096])  # every page resident
    return block


def test_it_follows_this_process():
    before = resident_memory()
    block = _touched(40)
    assert resident_memory() - before > 30 << 20
    del block


def test_a_forked_child_reads_its_own_memory():
    resident_memory()  # open in the parent first
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: 60 MiB more than its parent
        try:
            block = _touched(60)
            os.write(write_end, b"%d" % resident_memory())
            del block
        finally:
            os._exit(0)
    os.close(write_end)
    child = int(os.read(read_end, 64))
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child - resident_memory() > 45 << 20
