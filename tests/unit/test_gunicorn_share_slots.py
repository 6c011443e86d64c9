"""Which slot of the connection share a gunicorn worker gets
(`FastCGIWorker._claim_share_slot`): made in gunicorn's arbiter, before the
fork, a slot goes to a new worker once its last one is gone."""

import gc
import os
import subprocess

import pytest

pytest.importorskip("gunicorn")

from gunicorn.config import Config  # noqa: E402
from gunicorn.glogging import Logger  # noqa: E402

from wsgi_fcgi.gunicorn_worker import FastCGIWorker  # noqa: E402
from wsgi_fcgi.scoreboard import Scoreboard  # noqa: E402


@pytest.fixture
def arbiter(monkeypatch):
    """FastCGIWorker as gunicorn's arbiter sees it after check_config, with a board of its own."""
    monkeypatch.setattr(FastCGIWorker, "share_board", Scoreboard(4))
    monkeypatch.setattr(FastCGIWorker, "_share_owners", {})
    cfg = Config()
    log = Logger(cfg)
    made = []

    def spawn(pid=None, arbiter_pid=None):
        worker = FastCGIWorker(len(made) + 1, arbiter_pid or os.getpid(), [], None, 30, cfg, log)
        if pid is not None:
            worker.pid = pid  # as the arbiter sets it after the fork
        made.append(worker)
        return worker

    yield spawn, made
    for worker in made:
        worker.tmp.close()


def _exited_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_slot_is_reused_once_its_worker_is_gone(arbiter):
    spawn, made = arbiter
    first, second = spawn(os.getpid()), spawn(os.getpid())
    assert (first.share_index, second.share_index) == (0, 1)
    board = FastCGIWorker.share_board
    board.set_connections(0, 5, 5)  # what the first published before it died
    made.remove(first)
    first.tmp.close()
    del first
    gc.collect()
    third = spawn()
    assert third.share_index == 0
    assert board.connections(0) == 0 and board.fewest_connections_elsewhere(1) == -1


def test_a_slot_whose_process_exited_is_reused(arbiter):
    """The arbiter may still hold the worker object: its process is gone."""
    spawn, _ = arbiter
    spawn(_exited_pid())
    assert spawn().share_index == 0


def test_beyond_the_slots_a_worker_does_not_share(arbiter):
    spawn, _ = arbiter
    assert [spawn(os.getpid()).share_index for _ in range(5)] == [0, 1, 2, 3, None]


def test_only_the_arbiter_claims(arbiter):
    """A worker made in another process (not gunicorn's way) takes connections as they come."""
    spawn, _ = arbiter
    assert spawn(arbiter_pid=os.getpid() + 1).share_index is None
