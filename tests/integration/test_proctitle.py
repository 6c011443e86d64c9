"""Process titles: `ps` tells the master from the workers, with setproctitle
(the full title in /proc/PID/cmdline) and without it (the short name in
/proc/PID/comm, through prctl)."""

from pathlib import Path

from support import PYTHON, Process, free_port, pool_status, project_env, wait_for, worker_answers

STATUS = ("--status-path", "/fcgi-status")


def _cmdline(pid: int) -> str:
    return Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode().strip()


def _comm(pid: int) -> str:
    return Path("/proc/%d/comm" % pid).read_text().strip()


def _start(tmp_path, python_code: str, *args: str) -> tuple:
    address = "127.0.0.1:%d" % free_port()
    command = [PYTHON, "-c", python_code, "--bind", address, "--workers", "2", *STATUS, *args, "masterapp:app"]
    process = Process(command, tmp_path / ("titles-%d.log" % len(list(tmp_path.iterdir()))), env=project_env())
    wait_for(lambda: process.proc.poll() is None and worker_answers(address), 20, what="wsgi_fcgi")
    workers = wait_for(lambda: (lambda pids: len(pids) == 2 and pids)(
        sorted(w["pid"] for w in pool_status(address, "/fcgi-status")["worker_list"] if w["state"] in ("idle", "busy"))),
        20, interval=0.2, what="2 workers")
    return process, workers


def test_master_and_worker_titles_with_setproctitle(tmp_path):
    import setproctitle  # noqa: F401  (installed from requirements-dev.txt, the optional extra)
    process, workers = _start(tmp_path, "from wsgi_fcgi.cli import main; main()", "--pool-name", "shop")
    try:
        assert _cmdline(process.pid) == "wsgi-fcgi: master [shop]"
        assert _comm(process.pid) == "wsgi-fcgi"
        titles = sorted(_cmdline(pid) for pid in workers)
        assert titles == ["wsgi-fcgi: worker 1 [shop]", "wsgi-fcgi: worker 2 [shop]"]
        assert sorted(_comm(pid) for pid in workers) == ["wsgi-fcgi w1", "wsgi-fcgi w2"]
    finally:
        process.stop()


def test_short_names_without_setproctitle(tmp_path):
    hide = "import sys; sys.modules['setproctitle'] = None; from wsgi_fcgi.cli import main; main()"
    process, workers = _start(tmp_path, hide)
    try:
        assert _comm(process.pid) == "wsgi-fcgi"
        assert sorted(_comm(pid) for pid in workers) == ["wsgi-fcgi w1", "wsgi-fcgi w2"]
        assert "masterapp:app" in _cmdline(process.pid)  # the command line as started
        assert "wsgi-fcgi: master" not in _cmdline(process.pid)
    finally:
        process.stop()
