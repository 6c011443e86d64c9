"""The scoreboard's connection counts and the rule a worker takes new connections by."""

from wsgi_fcgi.scoreboard import ConnectionShare, Scoreboard


def claimed(slots: int) -> Scoreboard:
    """A scoreboard whose every slot has had a worker (the master claims
    each as it forks), in a pool whose web server keeps connections."""
    board = Scoreboard(slots)
    for index in range(slots):
        board.claim(index)
    board.note_keep_conn(True)
    return board


def test_a_new_scoreboard_has_no_worker_taking_connections():
    board = claimed(3)
    assert [board.fewest_connections_elsewhere(i) for i in range(3)] == [-1, -1, -1]
    assert ConnectionShare(board, 0).my_turn(1000)


def test_a_worker_takes_connections_unless_another_holds_fewer_by_more_than_the_slack():
    board = claimed(3)
    first, second, third = (ConnectionShare(board, i) for i in range(3))
    first.publish(5, 5)
    second.publish(3, 3)
    assert board.fewest_connections_elsewhere(0) == 3 and board.fewest_connections_elsewhere(1) == 5
    assert first.my_turn(4) and not first.my_turn(5)
    assert second.my_turn(3) and second.my_turn(6) and not second.my_turn(7)
    third.publish(0, 0)
    assert board.fewest_connections_elsewhere(1) == 0 and second.my_turn(1) and not second.my_turn(2)


def test_a_worker_not_taking_connections_is_left_out():
    board = claimed(2)
    first, second = ConnectionShare(board, 0), ConnectionShare(board, 1)
    first.publish(10, 10)
    second.publish(0, 0)
    assert not first.my_turn(10)
    second.publish(0, -1)  # busy, full or stopping
    assert first.my_turn(10)
    second.publish(0, 0)
    board.clear(1)  # the master reaped it
    assert first.my_turn(10) and board.fewest_connections_elsewhere(0) == -1


def test_only_the_slots_that_ever_had_a_worker_are_looked_through():
    board = Scoreboard(68)
    board.claim(1)  # the master started workers in slots 0 and 1
    ConnectionShare(board, 1).publish(2, 2)
    assert board.fewest_connections_elsewhere(0) == 2
    board.claim(0)  # a worker in a lower slot again: the end stays
    board.claim(3)
    ConnectionShare(board, 3).publish(0, 0)
    assert board.fewest_connections_elsewhere(0) == 0 and board.fewest_connections_elsewhere(3) == 2


def test_what_is_shown_is_every_connection_what_is_shared_by_the_kept_ones():
    board = claimed(2)
    ConnectionShare(board, 0).publish(9, 2)  # 7 of them close after their request
    assert board.connections(0) == 9 and board.fewest_connections_elsewhere(1) == 2


def test_nothing_is_shared_out_where_the_web_server_keeps_no_connection():
    board = Scoreboard(2)
    board.claim(1)
    first, second = ConnectionShare(board, 0), ConnectionShare(board, 1)
    second.publish(0, 0)
    assert not first.my_turn(10)  # no request yet: shared out
    second.note_keep_conn(False)
    assert first.my_turn(10) and board.keep_conn_seen() == (0, 1)
    first.note_keep_conn(True)  # kept ones after all (another location, another server)
    assert not first.my_turn(10) and board.keep_conn_seen() == (1, 1)
