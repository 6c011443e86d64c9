"""`wsgi.input`: a streaming body fed by the I/O loop, read by the app thread."""

import errno
import os
import threading
import time

import pytest

from wsgi_fcgi import body as body_module
from wsgi_fcgi.body import ClientDisconnected, EmptyBody, RequestBody


def body_of(*chunks, eof=True, **kw):
    body = RequestBody(**kw)
    for chunk in chunks:
        body.feed(chunk)
    if eof:
        body.feed_eof()
    return body


def test_a_body_in_tiny_chunks_moves_to_its_file_by_what_they_hold():
    """2-byte chunks hold about 50 bytes each: 1 MiB of them is 21,000,
    not 524,288."""
    body = body_of(*[b"ab"] * 17000, eof=False)
    assert body.spooled and body.bytes_in_memory == 0
    body.feed(b"cd")
    body.feed_eof()
    assert body.read() == b"ab" * 17000 + b"cd"
    ordinary = body_of(b"x" * 65536, b"y" * 65536, eof=False)
    assert not ordinary.spooled


def feed_later(body, chunks, delay=0.05, eof=True):
    def run():
        for chunk in chunks:
            time.sleep(delay)
            body.feed(chunk)
        if eof:
            body.feed_eof()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


LINES = [b"first line\n", b"second\n", b"\n", b"no newline at the end"]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 100])
def test_read_all_across_feed_boundaries(chunk_size):
    data = b"".join(LINES)
    body = body_of(*[data[i:i + chunk_size] for i in range(0, len(data), chunk_size)])
    assert body.read() == data
    assert body.read() == b""
    assert body.read(10) == b""


def test_read_with_sizes_and_none():
    body = body_of(b"abc", b"defg", b"h")
    assert body.read(2) == b"ab"
    assert body.read(3) == b"cde"
    assert body.read(0) == b""
    assert body.read(None) == b"fgh"


def test_read_past_the_end_gives_what_is_left():
    body = body_of(b"abc")
    assert body.read(100) == b"abc"
    assert body.read(100) == b""


def test_read1_returns_what_is_buffered():
    body = body_of(b"abc", eof=False)
    assert body.read1(100) == b"abc"
    body.feed(b"d")
    body.feed_eof()
    assert body.read1() == b"d"
    assert body.read1() == b""


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 64])
def test_readline_and_iteration_across_feed_boundaries(chunk_size):
    data = b"".join(LINES)
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
    body = body_of(*chunks)
    assert [body.readline() for _ in range(5)] == LINES + [b""]
    assert list(body_of(*chunks)) == LINES
    assert body_of(*chunks).readlines() == LINES


def test_readline_with_size_stops_there():
    body = body_of(b"abcdef\n", b"gh\n")
    assert body.readline(3) == b"abc"
    assert body.readline(100) == b"def\n"
    assert body.readline(None) == b"gh\n"
    assert body.readline(5) == b""


def test_readline_longer_than_the_internal_chunk():
    line = b"x" * 20000 + b"\n"
    body = body_of(line[:5000], line[5000:], b"tail")
    assert body.readline() == line
    assert body.readline() == b"tail"


def test_readlines_with_hint():
    body = body_of(b"aa\nbb\ncc\ndd\n")
    assert body.readlines(4) == [b"aa\n", b"bb\n"]
    assert body.readlines() == [b"cc\n", b"dd\n"]


def test_blocking_read_is_woken_by_feed_from_another_thread():
    body = RequestBody()
    thread = feed_later(body, [b"hel", b"lo", b" world"])
    started = time.monotonic()
    assert body.read(5) == b"hello"
    assert body.read() == b" world"
    assert time.monotonic() - started < 10
    thread.join(5)


def test_blocking_readline_is_woken_by_feed():
    body = RequestBody()
    thread = feed_later(body, [b"par", b"tial\nrest"])
    assert body.readline() == b"partial\n"
    assert body.readline() == b"rest"
    thread.join(5)


def test_read_without_size_waits_for_the_end_of_stdin():
    body = RequestBody()
    thread = feed_later(body, [b"a", b"b", b"c"], delay=0.02)
    assert body.read() == b"abc"
    thread.join(5)


def test_fail_wakes_a_blocked_reader_with_the_error():
    body = RequestBody()
    body.feed(b"some")
    errors = []

    def reader():
        try:
            body.read(100)
        except ClientDisconnected as exc:
            errors.append(exc)
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.1)
    assert thread.is_alive()  # blocked: 4 of 100 bytes there
    body.fail(ClientDisconnected("aborted"))
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1 and str(errors[0]) == "aborted"


def test_fail_after_eof_does_not_spoil_a_complete_body():
    body = body_of(b"complete")
    body.fail(ClientDisconnected("connection closed"))
    assert body.read() == b"complete"


def test_data_after_fail_is_dropped():
    body = RequestBody()
    body.fail(ClientDisconnected("gone"))
    body.feed(b"late")
    assert body.received == 0
    with pytest.raises(ClientDisconnected):
        body.read(1)


def test_spools_to_a_temporary_file_past_the_threshold(tmp_path):
    body = RequestBody(spool_size=1000, spool_dir=str(tmp_path))
    body.feed(b"a" * 600)
    assert not body.spooled
    body.feed(b"b" * 600)
    assert body.spooled
    for _ in range(100):
        body.feed(b"c" * 10000)  # 1 MB more, all on disk
    body.feed_eof()
    # memory stays bounded: nothing is held in the in-memory buffer
    assert body.bytes_in_memory == 0
    assert body.received == 1200 + 1_000_000
    assert body.read(700) == b"a" * 600 + b"b" * 100
    assert body.readline() == b"b" * 500 + b"c" * 1_000_000
    assert body.read() == b""


def test_spooled_body_read_while_being_fed():
    body = RequestBody(spool_size=10)
    thread = feed_later(body, [b"0123456789" * 3, b"abc\n", b"def"], delay=0.02)
    assert body.read(25) == b"0123456789" * 2 + b"01234"
    assert body.readline() == b"56789abc\n"
    assert body.read() == b"def"
    assert body.spooled
    thread.join(5)


def test_a_spooled_body_is_read_line_by_line_from_blocks_read_ahead(monkeypatch):
    body = RequestBody(spool_size=1000)
    lines = [b"%079d\n" % n for n in range(2000)]  # 160,000 bytes
    for line in lines:
        body.feed(line)
    body.feed_eof()
    assert body.spooled
    reads = []
    pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, size, offset: reads.append(size) or pread(fd, size, offset))
    assert body.readline() == lines[0]
    assert body.read(85) == lines[1] + lines[2][:5]  # from the block read ahead
    assert list(body) == [lines[2][5:]] + lines[3:]
    assert len(reads) <= 4, reads  # three blocks of 64 KiB, not two reads a line


def test_small_reads_of_a_spooled_body_are_slices_of_blocks_read_ahead(monkeypatch):
    data = bytes(range(256)) * 640  # 160 KiB
    body = RequestBody(spool_size=1000)
    for start in range(0, len(data), 4096):
        body.feed(data[start:start + 4096])
    body.feed_eof()
    assert body.spooled
    reads = []
    pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, size, offset: reads.append(size) or pread(fd, size, offset))
    got = [body.read(1000) for _ in range(100)]  # 100,000 bytes: two blocks of 64 KiB, one read straddles them
    assert reads == [65536, 65536]
    got.append(body.read(16384))  # as large as _SMALL_READ: what is ahead is enough
    got.append(body.read(40000))  # what is ahead, then a pread for the rest
    assert reads == [65536, 65536, 40000 - (2 * 65536 - 100_000 - 16384)]
    got.append(body.read())
    assert b"".join(got) == data


def test_a_spooled_line_goes_on_in_what_was_fed_after_its_block_was_read():
    body = RequestBody(spool_size=1)
    body.feed(b"first\nsec")
    assert body.readline() == b"first\n"  # the block read ahead ends in "sec"
    body.feed(b"ond\nthird\n")
    assert body.readline() == b"second\n"
    assert body.read(3) == b"thi"
    body.feed_eof()
    assert body.readline() == b"rd\n" and body.readline() == b""


def test_a_spool_write_the_disk_takes_only_part_of_fails_instead_of_losing_the_rest(monkeypatch):
    """A full disk: pwrite(2) writes what fits and returns that count; the
    next write raises ENOSPC.  The body must fail, not go on without the
    bytes that were not written (the app would get a body with a hole)."""
    body = RequestBody(spool_size=10)
    body.feed(b"a" * 20)
    assert body.spooled
    pwrite = os.pwrite
    space = [5]

    def full_disk(fd, data, offset):
        if not space[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = pwrite(fd, bytes(data)[:space[0]], offset)
        space[0] -= taken
        return taken
    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(OSError) as failed:
        body.feed(b"b" * 20)
    assert failed.value.errno == errno.ENOSPC


def test_a_short_spool_write_is_written_on(monkeypatch):
    body = RequestBody(spool_size=10)
    pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: pwrite(fd, bytes(data)[:7], offset))
    body.feed(b"0123456789abcdef")
    body.feed(b"ghijklmnopqrstuvwxyz")
    body.feed_eof()
    assert body.read() == b"0123456789abcdefghijklmnopqrstuvwxyz"


def test_close_releases_the_spool_file_and_wakes_readers():
    body = RequestBody(spool_size=1)
    body.feed(b"abc")
    assert body.spooled
    spool = body._file
    body.close()
    assert spool.closed and not body.spooled
    assert body.read() == b""


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

operations = st.lists(st.one_of(
    st.tuples(st.just("read"), st.integers(-1, 40)),
    st.tuples(st.just("read1"), st.integers(1, 40)),
    st.tuples(st.just("readline"), st.integers(-1, 40)),
), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\x00", b"\n")), max_size=12),
       spool_size=st.integers(0, 100), ops=operations, read_ahead=st.sampled_from([1, 3, 16, 65536]),
       small_read=st.sampled_from([0, 2, 20, 16384]))
def test_any_mix_of_reads_gives_back_the_fed_bytes_in_order(chunks, spool_size, ops, read_ahead, small_read):
    # blocks a read may straddle, reads served from them or not
    defaults = body_module._READ_AHEAD, body_module._SMALL_READ
    body_module._READ_AHEAD, body_module._SMALL_READ = read_ahead, small_read
    try:
        _check_a_mix_of_reads(chunks, spool_size, ops)
    finally:
        body_module._READ_AHEAD, body_module._SMALL_READ = defaults


def _check_a_mix_of_reads(chunks, spool_size, ops):
    body = RequestBody(spool_size=spool_size)
    for chunk in chunks:
        body.feed(chunk)
    body.feed_eof()
    data = b"".join(chunks)
    got = b""
    for name, size in ops:
        part = getattr(body, name)(size)
        if name == "readline":
            assert b"\n" not in part[:-1]
        if size >= 0:
            assert len(part) <= size
        got += part
    got += body.read()
    assert got == data
    assert body.read() == b"" and body.readline() == b""


@pytest.mark.parametrize("body", [EmptyBody(), body_of()], ids=["EmptyBody", "RequestBody"])
def test_an_empty_body_reads_as_a_complete_request_body_with_nothing_in_it(body):
    assert body.complete and body.received == 0 and body.readable()
    assert body.read() == body.read(10) == body.read(None) == body.read1() == b""
    assert body.readline() == body.readline(5) == b""
    assert body.readlines() == list(body) == []
    body.fail(ClientDisconnected("aborted"))  # complete: nothing to fail
    assert body.read() == b""
    body.close()
    assert body.read() == b""
