"""The connection's write side (output.Output) and read side (channel.Channel)
over a real socketpair, and the loop's wake-up, driven by hand: no loop
thread, no pool."""

import select
import selectors
import socket
import threading
import time

import pytest

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p
from wsgi_fcgi.channel import CLOSED, CLOSING, DRAINING, OPEN
from wsgi_fcgi.output import Output
from wsgi_fcgi.server import Server


def tiny_pair():
    """A socketpair whose sending side takes little before it is full."""
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setblocking(False)
    return ours, peer


def read_all(sock, size, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


# -- output.Output --------------------------------------------------------------------

def test_a_small_write_goes_straight_to_the_kernel():
    ours, peer = tiny_pair()
    backlog = []
    out = Output(ours, 1 << 20, lambda: backlog.append(1))
    with out.lock:
        assert out.write_locked([b"abc", b"def"])
    assert out.pending == 0 and not backlog
    assert read_all(peer, 6) == b"abcdef"


def test_what_the_kernel_does_not_take_is_queued_and_flushed_in_order():
    ours, peer = tiny_pair()
    backlog = []
    out = Output(ours, 1 << 20, lambda: backlog.append(1))
    data = bytes(range(256)) * 4096  # 1 MiB, far more than the socket buffers
    with out.lock:
        assert out.write_locked(data)
        assert out.write_locked(b"tail")  # behind the queue, never before it
    assert out.pending > 0 and backlog == [1]  # the loop is asked once to watch for writability
    assert out.stalled_for(time.monotonic() + 1) >= 1
    received = bytearray()
    peer.settimeout(5)
    while len(received) < len(data) + 4:
        received += peer.recv(1 << 16)
        out.flush()
    assert bytes(received) == data + b"tail"
    assert out.pending == 0 and out.stalled_for(time.monotonic()) == 0


@pytest.fixture
def sends_keeping_the_gil(monkeypatch):
    """The data of each send that keeps the GIL, as it happens."""
    from wsgi_fcgi import output
    assert output._send_keeping_the_gil is not None  # Linux and glibc: CI runs it
    calls = []
    real = output._send_keeping_the_gil

    def spy(fd, data):
        calls.append(bytes(data))
        return real(fd, data)
    monkeypatch.setattr(output, "_send_keeping_the_gil", spy)
    return calls


def test_small_bytes_go_out_keeping_the_gil_and_a_full_socket_queues_them(sends_keeping_the_gil):
    from wsgi_fcgi import output
    calls = sends_keeping_the_gil
    ours, peer = tiny_pair()
    out = Output(ours, 1 << 20, lambda: None)
    chunk = b"x" * 1000
    with out.lock:
        while not out.pending:  # until the socket is full: EAGAIN queues, it does not fail
            assert out.write_locked(chunk)
        assert out.failed is None
        assert out.write_locked(b"y" * (output._KEEP_THE_GIL_UP_TO + 1))  # queued behind, sent by sendmsg later
    assert calls and {len(data) for data in calls} == {1000}
    received = bytearray()
    peer.settimeout(5)
    while out.pending:
        received += peer.recv(1 << 16)
        out.flush()
    assert max(map(len, calls)) <= output._KEEP_THE_GIL_UP_TO
    peer.close()  # a peer gone: EPIPE fails the output (no SIGPIPE kills the process)
    with out.lock:
        for _ in range(3):
            out.write_locked(chunk)
    assert out.failed and "write failed" in out.failed


def test_chunks_written_behind_leave_in_one_send_that_keeps_the_gil(sends_keeping_the_gil):
    """The loop thread flushes them: a release of the GIL there, while an
    app computes, would cost it a switch interval to take the GIL back."""
    calls = sends_keeping_the_gil
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    backlog = []
    out = Output(ours, 1 << 20, lambda: backlog.append(1))
    with out.lock:
        for number in range(100):
            assert out.write_behind_locked(b"chunk %d;" % number)
    assert calls == [] and backlog == [1]  # queued, and the loop asked once
    assert out.flush()
    expected = b"".join(b"chunk %d;" % n for n in range(100))
    assert calls == [expected]
    assert read_all(peer, len(expected)) == expected
    ours.close()
    peer.close()


def test_a_socket_that_could_block_is_never_written_keeping_the_gil():
    """A send keeping the GIL on a blocking socket would freeze every thread
    while a peer does not read."""
    blocking, peer = socket.socketpair()
    assert not Output(blocking, 1 << 20, lambda: None)._keep_the_gil
    blocking.settimeout(5)
    assert not Output(blocking, 1 << 20, lambda: None)._keep_the_gil
    blocking.setblocking(False)
    assert Output(blocking, 1 << 20, lambda: None)._keep_the_gil
    blocking.close()
    peer.close()


def test_a_closed_socket_is_never_written_through_a_reused_descriptor():
    """The descriptor is asked for at each send: after close() it is -1,
    while its old number is already another connection's."""
    ours, peer = tiny_pair()
    out = Output(ours, 1 << 20, lambda: None)
    number = ours.fileno()
    ours.close()
    other, other_peer = socket.socketpair()  # the lowest free numbers: `number` among them
    try:
        assert number in (other.fileno(), other_peer.fileno())
        with out.lock:
            assert not out.write_locked(b"not for the other connection")
        assert out.failed and "write failed" in out.failed
        for sock in (other, other_peer):
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(100)  # nothing arrived on the connection that got the number
    finally:
        for sock in (other, other_peer, peer):
            sock.close()


def test_a_writer_past_the_limit_waits_until_the_socket_took_half():
    ours, peer = tiny_pair()
    out = Output(ours, 64 * 1024, lambda: None)
    with out.lock:
        out.write_locked(b"x" * (256 * 1024))
    released = threading.Event()

    def writer():
        with out.lock:
            assert out.wait_locked()
        released.set()
    thread = threading.Thread(target=writer)
    thread.start()
    assert not released.wait(0.3)  # the peer reads nothing: the writer waits
    with out.lock:  # ... and the lock is free for the loop meanwhile
        pass
    peer.setblocking(False)
    deadline = time.monotonic() + 10
    while not released.wait(0.005) and time.monotonic() < deadline:
        try:
            peer.recv(1 << 16)
        except BlockingIOError:
            pass
        out.flush()
    thread.join(5)
    assert released.is_set()
    assert out.pending <= 32 * 1024


def test_failing_the_output_releases_every_waiting_writer_at_once():
    ours, peer = tiny_pair()
    out = Output(ours, 1024, lambda: None)
    with out.lock:
        out.write_locked(b"x" * (256 * 1024))
    results = []

    def writer():
        with out.lock:
            results.append(out.wait_locked())
    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    with out.lock:
        out.fail_locked("write timeout")
    for thread in threads:
        thread.join(5)
    assert results == [False] * 3 and time.monotonic() - started < 1
    with out.lock:
        assert not out.write_locked(b"more")


def test_the_fin_follows_the_queued_output():
    ours, peer = tiny_pair()
    out = Output(ours, 1 << 20, lambda: None)
    data = b"y" * (512 * 1024)
    with out.lock:
        out.write_locked(data)
        out.shutdown_locked()
    assert not out.fin_sent and out.fin_after_flush
    received = bytearray()
    peer.settimeout(5)
    while True:
        out.flush()
        chunk = peer.recv(1 << 16)
        if not chunk:
            break
        received += chunk
    assert len(received) == len(data) and out.fin_sent


# -- channel.Channel: read side and write side by hand ------------------------------------

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " + environ["PATH_INFO"].encode()]


@pytest.fixture
def engine():
    server = Server(hello, sockets=[], threads=4, inline_requests=False)
    yield server
    server.loop.close()


def new_channel(server):
    ours, peer = socket.socketpair()
    return server.loop.add_channel(ours, None), peer


def run_ready(server):
    while server.loop.ready:
        server.handle_request(server.loop.ready.popleft())


def responses(peer, *ids):
    parser = p.RecordParser()
    records = []
    peer.settimeout(5)
    while not all(any(r.type == p.END_REQUEST and r.request_id == i for r in records) for i in ids):
        records += parser.feed(peer.recv(65536))
    return records


def test_a_wake_that_lands_while_the_loop_drains_its_wake_ups_is_not_lost(engine):
    """Another thread's wake() in the middle of the loop's drain: later
    wake()s must still interrupt the selector.  (With the flag cleared before
    the drain, that wake's byte was drained with the flag left set, and every
    later wake() was dropped: a response tail a request thread queued sat
    unsent until the loop's next tick, up to a second.)"""
    loop = engine.loop
    wake_socket = loop._wake_r

    class WakeDuringTheDrain:
        def __init__(self):
            self.woke = False

        def recv(self, size):
            if not self.woke:
                self.woke = True
                loop.wake()  # as a request thread would, at this very moment
            return wake_socket.recv(size)

    loop.wake()
    loop._wake_r = WakeDuringTheDrain()
    try:
        loop._on_wake(selectors.EVENT_READ)
    finally:
        loop._wake_r = wake_socket
    loop.wake()
    assert select.select([wake_socket], [], [], 1.0)[0] == [wake_socket]


def test_a_request_read_run_and_answered(engine):
    channel, peer = new_channel(engine)
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/x"), keep_conn=True))
    channel.on_readable()
    assert [r.request_id for r in engine.loop.ready] == [1]
    run_ready(engine)
    records = responses(peer, 1)
    assert b"hello /x" in b"".join(r.content for r in records if r.type == p.STDOUT)
    channel.reap_finished()
    assert channel.state is OPEN and channel.idle() and not channel.conn.is_live(1)


def test_keep_conn_clear_ends_with_the_fin_in_the_same_write(engine):
    channel, peer = new_channel(engine)
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/bye")))
    channel.on_readable()
    assert channel.state is CLOSING
    run_ready(engine)
    responses(peer, 1)
    assert peer.recv(1) == b""  # the FIN came right behind END_REQUEST
    assert channel.state is DRAINING
    peer.close()
    channel.on_readable()  # the peer's EOF: closed, no reset
    assert channel.state is CLOSED


def test_a_half_closed_peer_still_gets_its_response(engine):
    channel, peer = new_channel(engine)
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/half"), keep_conn=True))
    peer.shutdown(socket.SHUT_WR)
    channel.on_readable()
    channel.on_readable()  # reads the EOF
    assert channel.peer_closed and channel.state is CLOSING
    run_ready(engine)
    records = responses(peer, 1)
    assert b"hello /half" in b"".join(r.content for r in records if r.type == p.STDOUT)


def test_management_records_do_not_keep_a_connection_alive(engine):
    channel, peer = new_channel(engine)
    idle_since = channel.idle_since
    time.sleep(0.05)
    peer.sendall(p.encode_get_values([p.MAX_REQS]) + p.encode_record(p.STDIN, 7))
    channel.on_readable()
    assert channel.idle_since == idle_since  # only requests count for --keep-alive


def test_a_connection_whose_request_asked_to_close_is_never_handed_on(engine):
    # nginx without fastcgi_keep_conn waits for our close: handing the socket
    # to another worker (which keeps it open) would leave nginx waiting.
    channel, peer = new_channel(engine)
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/x")))
    channel.on_readable()
    channel.close_when_idle("server stopping", handoff=True)
    assert not channel.handoff
    run_ready(engine)
    responses(peer, 1)
    assert peer.recv(1) == b"" and channel.state is DRAINING


def stream_of(count, between=lambda: None):
    """An app streaming `count` small chunks; `between` runs before each chunk after the first."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        for number in range(count):
            if number:
                between()
            yield b"chunk %d\n" % number
    return app


def stdout_of(records):
    return b"".join(r.content for r in records if r.type == p.STDOUT)


def nothing_arrived(peer):
    peer.setblocking(False)
    try:
        return peer.recv(65536) == b"never"
    except BlockingIOError:
        return True
    finally:
        peer.setblocking(True)


def test_streamed_chunks_are_written_behind_and_the_end_flushes_them_in_order(engine):
    """Chunks an app yields one after the other are queued for the loop
    thread, which sends them in one write; the response's end does not wait
    for the loop: its thread flushes the queue, then the closing records."""
    channel, peer = new_channel(engine)
    seen_by_the_peer = []
    engine.app = stream_of(50, between=lambda: seen_by_the_peer.append(nothing_arrived(peer)))
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/"), keep_conn=True))
    channel.on_readable()
    run_ready(engine)
    assert seen_by_the_peer == [True] * 49  # nothing was sent while the app streamed
    assert channel in engine.loop._write_wanted  # the loop was asked to send the queue
    body = stdout_of(responses(peer, 1))
    assert body.endswith(b"".join(b"chunk %d\n" % n for n in range(50)))
    assert channel.output.pending == 0


def test_the_loop_sends_what_was_written_behind_without_waiting_for_writability(engine):
    channel, peer = new_channel(engine)
    flushes = []

    def the_loop_runs():
        flushes.append(bool(channel.output.pending))
        engine.loop._attend(time.monotonic())  # what the loop does once woken
        flushes.append(channel.output.pending)

    engine.app = stream_of(2, between=the_loop_runs)
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/"), keep_conn=True))
    channel.on_readable()
    run_ready(engine)
    assert flushes == [True, 0]
    assert stdout_of(responses(peer, 1)).endswith(b"chunk 0\nchunk 1\n")


def stream_flushed_by_the_loop_every(engine, burst, count=100):
    """Stream `count` chunks while the loop flushes after every `burst` of them
    (the app releases the GIL then); whether each chunk after the first was
    still queued when the app resumed, i.e. written behind."""
    channel, peer = new_channel(engine)
    queued = []

    def between():
        queued.append(channel.output.pending > 0)
        if len(queued) % burst == 0:
            engine.loop._attend(time.monotonic())

    engine.app = stream_of(count, between=between)
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/"), keep_conn=True))
    channel.on_readable()
    run_ready(engine)
    body = stdout_of(responses(peer, 1))
    assert body.endswith(b"".join(b"chunk %d\n" % n for n in range(count)))
    return queued


@pytest.mark.parametrize("burst", [1, 2, 3])
def test_an_app_whose_chunks_the_loop_flushes_one_or_two_at_a_time_sends_them_at_once(engine, burst):
    """An app that waits between chunks (the GIL released) gains nothing
    from writing behind: each flush of the loop thread costs more than the
    sends of the one or two chunks it carries.  Once its credit is spent
    (after its first queue), its chunks go out at once."""
    queued = stream_flushed_by_the_loop_every(engine, burst)
    assert sum(queued) == burst and all(queued[:burst])


def test_a_stream_that_keeps_the_queue_busy_keeps_writing_behind(engine):
    """Chunks that joined a queue earn credit: an app that yields bursts
    between the loop's flushes goes on writing behind."""
    assert all(stream_flushed_by_the_loop_every(engine, 10))


def test_a_stopping_server_hands_over_a_connection_whose_next_request_already_waits():
    # Under load nginx's next request on a kept connection is often in our
    # socket buffer before the loop looks at the connection again.  A stopping
    # worker must hand the connection over then, the request unread, not
    # serve it (and the one after it...): a worker retired for its memory or
    # its request count would go on serving as long as the requests come.
    from wsgi_fcgi.handoff import Handoff
    handoff = Handoff()
    peer_box = []

    def stop_after_this_request(environ, start_response):
        # Runs inline on the loop thread: the next request lands in the buffer
        # before the loop reads again, as a loaded host makes it happen.
        peer_box[0].sendall(client.encode_request(2, client.cgi_params("POST", "/next"), b"body",
                                                  keep_conn=True))
        server.shutdown(graceful=True, timeout=5)
        return hello(environ, start_response)

    server = Server(stop_after_this_request, bind="127.0.0.1:0", threads=2, handoff=handoff)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        peer = socket.create_connection(server.addresses[0].rsplit(":", 1), timeout=5)
        peer_box.append(peer)
        peer.sendall(client.encode_request(1, client.cgi_params("POST", "/first"), b"body", keep_conn=True))
        assert server.wait_stopped(10)
        thread.join(10)
        records = responses(peer, 1)
        assert not any(r.request_id == 2 for r in records)
        handed = handoff.receive()
        assert len(handed) == 1
        handed[0].settimeout(5)
        parser = p.RecordParser()
        unread = parser.feed(handed[0].recv(65536))
        assert unread and {r.request_id for r in unread} == {2}  # request 2, left for the next worker
    finally:
        peer.close()
        handoff.close()


def closing_after_one_request(handoff):
    """A connection whose first request was answered after its worker began
    to stop, and whose peer then sent a second one."""
    server = Server(hello, sockets=[], threads=2, inline_requests=False, handoff=handoff)
    channel, peer = new_channel(server)
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/1"), keep_conn=True))
    channel.on_readable()
    channel.close_when_idle("server stopping", handoff=True)
    assert channel.state is CLOSING  # request 1 is live
    run_ready(server)
    responses(peer, 1)
    peer.sendall(client.encode_request(2, client.cgi_params("GET", "/2"), keep_conn=True))
    return server, channel, peer


def test_a_closing_connection_is_handed_over_before_its_waiting_request_is_read():
    from wsgi_fcgi.handoff import Handoff
    handoff = Handoff()
    server, channel, peer = closing_after_one_request(handoff)
    channel.on_readable()
    assert channel.state is CLOSED and not server.loop.ready
    handed = handoff.receive()
    handed[0].settimeout(5)
    assert {r.request_id for r in p.RecordParser().feed(handed[0].recv(65536))} == {2}
    server.loop.close()
    handoff.close()


def test_a_waiting_request_nobody_can_take_over_is_served_not_cut_by_a_fin():
    from wsgi_fcgi.handoff import Handoff
    handoff = Handoff()
    handoff.close_pool()  # the whole pool stops: no worker adopts connections
    server, channel, peer = closing_after_one_request(handoff)
    channel.on_readable()
    assert channel.state is CLOSING and [r.request_id for r in server.loop.ready] == [2]
    run_ready(server)
    records = responses(peer, 2)
    assert b"hello /2" in b"".join(r.content for r in records if r.type == p.STDOUT)
    server.loop.close()
    handoff.close()


def idle_closing_with_a_full_handoff_queue():
    """A kept connection, idle after one request, of a worker that stops
    while the queue of handed connections is full (some 280 in it)."""
    from wsgi_fcgi.handoff import Handoff
    handoff = Handoff()
    filler = socket.socket()
    while handoff.send(filler):
        pass
    filler.close()
    server = Server(hello, sockets=[], threads=2, inline_requests=False, handoff=handoff)
    channel, peer = new_channel(server)
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/1"), keep_conn=True))
    channel.on_readable()
    run_ready(server)
    responses(peer, 1)
    channel.close_when_idle("server stopping", handoff=True)
    return handoff, server, channel, peer


def test_a_full_handoff_queue_keeps_the_connection_until_a_live_worker_makes_room():
    handoff, server, channel, peer = idle_closing_with_a_full_handoff_queue()
    channel.finish_closing(time.monotonic())
    # No FIN: nginx may be sending its next request on it right now (a POST
    # cut that way is a 502); it is handed over once the queue has room.
    assert channel.state is CLOSING
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)
    for sock in handoff.receive(limit=1000):  # a live worker adopts what was queued
        sock.close()
    for key, mask in server.loop.selector.select(5):
        key.data(mask)
    assert channel.state is CLOSED
    handed = handoff.receive()
    assert len(handed) == 1
    handed[0].sendall(b"from the next worker")
    peer.setblocking(True)
    peer.settimeout(5)
    assert peer.recv(64) == b"from the next worker"
    server.loop.close()
    handoff.close()


def test_a_full_handoff_queue_of_a_pool_that_stops_closes_the_connection():
    handoff, server, channel, peer = idle_closing_with_a_full_handoff_queue()
    handoff.close_pool()
    channel.finish_closing(time.monotonic())
    assert channel.state is DRAINING
    assert peer.recv(1) == b""
    server.loop.close()
    handoff.close()


def test_a_busy_worker_leaves_handed_over_connections_to_the_others():
    # As with new connections: one worker adopting all of a stopping worker's
    # connections would answer 503 past --max-queue while the others idle.
    from wsgi_fcgi.handoff import Handoff
    handoff = Handoff()
    server = Server(hello, sockets=[], threads=1, inline_requests=False, handoff=handoff, multiprocess=True)
    loop = server.loop
    loop.start_accepting()
    channel, peer = new_channel(server)
    peer.sendall(client.encode_request(1, client.cgi_params("GET", "/busy"), keep_conn=True))
    channel.on_readable()
    assert server.all_threads_busy()
    handed = [socket.socketpair() for _ in range(3)]
    for ours, _ in handed:
        assert handoff.send(ours)

    def loop_round():
        for key, mask in loop.selector.select(0.5):
            key.data(mask)

    loop_round()
    assert len(loop.channels) == 1 and not loop.accepting  # left on the queue
    run_ready(server)
    responses(peer, 1)
    channel.reap_finished()
    loop.start_accepting()  # what the loop does once a thread is free
    loop_round()
    assert len(loop.channels) == 4
    loop.close()
    handoff.close()
    for ours, theirs in handed:
        ours.close()
        theirs.close()


def test_a_queue_full_again_before_the_retry_keeps_the_connection_waiting():
    # Other stopping workers may fill the room this one was woken for.
    handoff, server, channel, peer = idle_closing_with_a_full_handoff_queue()
    channel.finish_closing(time.monotonic())
    for sock in handoff.receive(limit=1000):  # room: the loop is woken for it ...
        sock.close()
    events = server.loop.selector.select(5)
    filler = socket.socket()
    while handoff.send(filler):  # ... and the others fill it meanwhile
        pass
    for key, mask in events:
        key.data(mask)  # the retry finds it full: waits again, nothing raised
    assert channel.state is CLOSING and server.loop.awaits_handoff(channel)
    for sock in handoff.receive(limit=1000):
        sock.close()
    for key, mask in server.loop.selector.select(5):
        key.data(mask)
    assert channel.state is CLOSED
    filler.close()
    server.loop.close()
    handoff.close()
