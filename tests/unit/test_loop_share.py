"""A worker's loop standing aside for one holding fewer connections
(`EventLoop._take_connections`, `_resume_accepting`), with a real listening
socket and scoreboard and the server reduced to what accepting asks of it."""

import socket
import time
from types import SimpleNamespace

import pytest

from wsgi_fcgi.listeners import PeerFilter
from wsgi_fcgi.loop import STAND_ASIDE, STAND_ASIDE_CHECK, EventLoop
from wsgi_fcgi.scoreboard import ConnectionShare, Scoreboard


class Server:
    settings = {"max_connections": 100}
    threads = 8
    max_queue = 10
    live = 0

    def live_requests(self) -> int:
        return self.live

    def all_threads_busy(self) -> bool:
        return self.live >= self.threads


@pytest.fixture
def pool():
    """(loop of worker 0 holding 3 connections, accepting; worker 1's share; the scoreboard)"""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    board = Scoreboard(2)
    board.claim(1)
    loop = EventLoop(Server(), [listener], PeerFilter(None), None)
    loop.share = ConnectionShare(board, 0)
    loop.note_keep_conn(True)
    loop.channels = {fd: SimpleNamespace(state=None) for fd in range(3)}
    loop.start_accepting()
    yield loop, ConnectionShare(board, 1), board
    loop.selector.close()
    listener.close()


def refuse():
    raise AssertionError("took a connection while another worker holds fewer")


def test_it_stands_aside_counted_and_takes_connections_again_once_the_other_caught_up(pool):
    loop, other, board = pool
    other.publish(1, 1)
    loop._take_connections(refuse)
    assert not loop.accepting and board.fewest_connections_elsewhere(1) == 3  # still counted
    now = time.monotonic()
    loop._resume_accepting(now)
    assert not loop.accepting and loop._next_timer <= now + STAND_ASIDE_CHECK
    other.publish(2, 2)
    loop._resume_accepting(now + STAND_ASIDE_CHECK)
    assert loop.accepting and board.fewest_connections_elsewhere(1) == 3


def test_after_standing_aside_it_takes_what_nobody_took(pool):
    loop, other, board = pool
    other.publish(0, 0)
    loop._take_connections(refuse)
    taken = []
    loop._accept_one = lambda listener: taken.append(listener) and False
    loop._resume_accepting(time.monotonic() + STAND_ASIDE)
    assert taken == loop.sockets and loop.accepting


def test_a_worker_stopping_while_it_stands_aside_takes_none_for_the_others(pool):
    loop, other, board = pool
    other.publish(0, 0)
    loop._take_connections(refuse)
    loop.stop_at = time.monotonic() + 10
    loop._begin_stop(time.monotonic())
    assert board.fewest_connections_elsewhere(1) == -1



def test_a_pool_whose_web_server_does_not_keep_connections_shares_none_out(pool):
    """nginx without fastcgi_keep_conn: a connection per request, each
    carrying one; standing aside for one another then cost 13% of the hello
    requests a second, for nothing."""
    loop, _, _ = pool
    board = Scoreboard(2)  # a new pool: no request yet
    board.claim(1)
    loop.share, other = ConnectionShare(board, 0), ConnectionShare(board, 1)
    loop.kept_noted = False
    other.publish(0, 0)
    loop._take_connections(refuse)  # shared out: nginx may be opening its kept connections
    loop._resume_accepting(time.monotonic() + STAND_ASIDE)
    other.note_keep_conn(False)  # a request with FCGI_KEEP_CONN clear, in another worker
    taken = []
    loop._take_connections(lambda: taken.append(True) and False)
    assert taken == [True] and loop.accepting
    loop.note_keep_conn(True)  # one with it set: kept connections to share out after all
    loop._take_connections(refuse)
    assert not loop.accepting


def test_a_busy_worker_takes_connections_no_other_worker_takes(pool):
    """Every thread busy: new connections are left to a worker that takes
    them; with none taking (all busy), one left in the listen backlog waited
    until a worker's live requests fell below its threads, half a second
    behind kept connections sending requests back to back."""
    loop, other, _ = pool
    loop.server.live = 8
    other.publish(5, 5)
    assert not loop._may_accept(time.monotonic())  # the other takes them
    other.publish(5, -1)
    assert loop._may_accept(time.monotonic())  # nobody does
    loop._stop_accepting()
    loop._resume_accepting(time.monotonic())
    assert loop.accepting
    taken = []
    loop._take_connections(lambda: taken.append(True) and False)
    assert taken == [True]
    loop.channels.update({fd: None for fd in range(3, 10)})  # 10: as many as --max-queue
    assert not loop._may_accept(time.monotonic())  # past that, the listen backlog as before


def test_where_nothing_is_shared_out_a_busy_worker_leaves_connections_in_the_backlog(pool):
    """nginx without kept connections: each carries one request, and the
    first worker with a free thread takes the next (as php-fpm's children do)."""
    loop, _, _ = pool
    loop.share = ConnectionShare(Scoreboard(2), 0)  # a pool that saw only FCGI_KEEP_CONN clear
    loop.share.note_keep_conn(False)
    loop.server.live = 8
    assert not loop._may_accept(time.monotonic())
