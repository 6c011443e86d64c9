"""Symlinked releases (Capistrano/Ansible): --chdir /srv/app/current with
current -> releases/N; after the link moves and HUP, the new workers import
the new release."""

import json
import os
import signal

from support import WsgiFcgi, children_of, wait_for

from wsgi_fcgi import client

RELEASE_APP = '''
import os, sys
import release_helper

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"release": release_helper.RELEASE, "cwd": os.getcwd(), "path": sys.path[:3],
                        "pid": os.getpid()}).encode()]

import json
'''


def make_release(root, number):
    release = root / "releases" / str(number)
    release.mkdir(parents=True)
    (release / "release_app.py").write_text(RELEASE_APP)
    (release / "release_helper.py").write_text("RELEASE = %d\n" % number)
    return release


def point(link, target):
    """Move the symlink atomically, as deploy tools do (ln -sfn + mv -T)."""
    tmp = link.with_name(link.name + ".new")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def answer(address):
    response = client.request(address, "GET", "/", timeout=10)
    assert response.status == 200, response
    return json.loads(response.body)


def test_hup_after_moving_the_current_link_serves_the_new_release(tmp_path):
    site = tmp_path / "srv"
    first, second = make_release(site, 1), make_release(site, 2)
    current = site / "current"
    point(current, first)
    server = WsgiFcgi("release_app:app", tmp_path, "--chdir", str(current), "--workers", "2", cwd=tmp_path)
    try:
        seen = answer(server.address)
        assert seen["release"] == 1
        assert seen["path"][0] == str(current), "sys.path holds the path as given, not the resolved one"
        assert seen["cwd"] == str(first)
        point(current, second)
        assert answer(server.address)["release"] == 1  # nothing changes before the reload
        old_workers = children_of(server.pid)
        server.send_signal(signal.SIGHUP)
        # until the old workers are gone, they may still take a new connection
        wait_for(lambda: (lambda now: len(now) == 2 and not now & old_workers)(children_of(server.pid)), 30,
                 interval=0.2, what="the old workers replaced after HUP")
        assert all(answer(server.address)["release"] == 2 for _ in range(4))
        seen = answer(server.address)
        assert seen["cwd"] == str(second) and seen["path"][0] == str(current)
    finally:
        server.stop()
