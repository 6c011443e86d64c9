"""--user, --group, --umask, --socket-owner, --socket-group with a real
unprivileged account (nobody/nogroup): the master binds as root, the workers
run the app as the user.  The interpreter is the system's /usr/bin/python3,
as in a real deployment: the user must be able to read it."""

import grp
import json
import os
import pwd
import signal
import stat
from pathlib import Path

import pytest
from support import APPS, ROOT, Process, project_env, wait_for, worker_answers

from wsgi_fcgi import client

SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user"),
    pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="no " + SYSTEM_PYTHON),
]

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrgid(NOBODY.pw_gid)


def start(tmp_path: Path, *args: str, name: str = "wsgi_fcgi") -> tuple:
    address = "unix:%s" % (tmp_path / (name + ".sock"))
    env = project_env({"PYTHONPATH": "%s:%s" % (ROOT, APPS)})
    proc = Process([SYSTEM_PYTHON, "-m", "wsgi_fcgi", "--bind", address, *args, "envapp:app"],
                   tmp_path / (name + ".log"), cwd=APPS, env=env)
    wait_for(lambda: proc.proc.poll() is not None or worker_answers(address), 20, what="wsgi_fcgi")
    assert proc.proc.poll() is None, proc.log()
    return proc, address


def credentials(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path("/proc/%d/status" % pid).read_text().splitlines())
    return {"uid": [int(x) for x in fields["Uid"].split()], "gid": [int(x) for x in fields["Gid"].split()],
            "groups": [int(x) for x in fields["Groups"].split()], "umask": fields["Umask"].strip()}


def app_pid(address: str) -> int:
    response = client.request(address, "GET", "/", timeout=10)
    assert response.status == 200, response
    return json.loads(response.body)["pid"]


def test_workers_run_as_the_user_and_the_socket_belongs_to_the_web_server(tmp_path):
    proc, address = start(tmp_path, "--workers", "2", "--user", "nobody", "--group", "nogroup",
                          "--umask", "027", "--socket-owner", "nobody", "--socket-group", "nogroup",
                          "--socket-mode", "0660")
    try:
        pids = {app_pid(address) for _ in range(20)}
        for pid in pids:
            assert pid != proc.pid
            seen = credentials(pid)
            assert seen["uid"] == [NOBODY.pw_uid] * 4, seen
            assert seen["gid"] == [NOGROUP.gr_gid] * 4, seen
            # initgroups: nobody's groups; root's supplementary groups are gone
            assert sorted(seen["groups"]) == sorted(set(os.getgrouplist("nobody", NOGROUP.gr_gid))), seen
            assert seen["umask"] == "0027"
        master = credentials(proc.pid)
        assert master["uid"][0] == 0  # the master keeps root (it forks, signals, reopens logs)
        info = os.stat(address[5:])
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY.pw_uid, NOGROUP.gr_gid, 0o660)
        assert "run the app as root" not in proc.log()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.stop()
    assert not os.path.exists(address[5:])


def test_no_master_drops_too_and_root_is_warned_about(tmp_path):
    proc, address = start(tmp_path, "--no-master", "--user", "nobody", name="single")
    try:
        pid = app_pid(address)
        assert pid == proc.pid and credentials(pid)["uid"] == [NOBODY.pw_uid] * 4
    finally:
        proc.stop()
    rooted, address = start(tmp_path, name="rooted")
    try:
        assert credentials(app_pid(address))["uid"][0] == 0
        assert "the workers run the app as root: set --user" in rooted.log()
    finally:
        rooted.stop()


@pytest.mark.parametrize("args, expected", [
    (["--user", "no-such-user-xyz"], "--user no-such-user-xyz: no such user"),
    (["--user", "nobody", "--group", "no-such-group-xyz"], "--group no-such-group-xyz: no such group"),
    (["--socket-group", "no-such-group-xyz"], "--socket-group no-such-group-xyz: no such group"),
])
def test_unknown_names_are_one_line(tmp_path, args, expected):
    proc = Process([SYSTEM_PYTHON, "-m", "wsgi_fcgi", "--bind", "unix:%s" % (tmp_path / "x.sock"), *args,
                    "envapp:app"], tmp_path / "bad.log", cwd=APPS, env=project_env())
    try:
        assert proc.wait(20) == 1
    finally:
        proc.stop()
    assert "wsgi-fcgi: error: " + expected in proc.log() and "Traceback" not in proc.log()
