"""Shared hosting: Apache's mod_fcgid spawning the executable .fcgi script of
deploy/apache-mod-fcgid (the classic flup deployment): the listening socket
on fd 0, one request per process at a time, processes run as Apache's user."""

import os
import pwd
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support import APPS, ROOT, assert_head_then_get, wait_for

from frontends import Apache

RECIPE = ROOT / "deploy" / "apache-mod-fcgid"
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/lib/apache2/modules/mod_fcgid.so"),
                                reason="libapache2-mod-fcgid is not installed")


def start_apache(tmp: Path) -> Apache:
    """Apache with the shipped fcgid.conf, serving the shipped app.fcgi (as
    shipped: #!/usr/bin/python3) in front of tests/apps/envapp.py as myapp."""
    htdocs = tmp / "htdocs"
    htdocs.mkdir()
    script = htdocs / "app.fcgi"
    shutil.copy(RECIPE / "app.fcgi", script)
    assert script.read_text().startswith("#!" + SYSTEM_PYTHON)
    os.chmod(script, 0o755)
    shutil.copy(APPS / "envapp.py", htdocs / "myapp.py")  # the app the script imports
    conf = (RECIPE / "fcgid.conf").read_text().replace("/var/www/html", str(htdocs))
    conf += f"""
TypesConfig /etc/mime.types
FcgidIPCDir {tmp}/fcgid
FcgidProcessTableFile {tmp}/fcgid_shm
# wsgi_fcgi from this checkout (on a host: pip install --user wsgi-fcgi)
FcgidInitialEnv PYTHONPATH {ROOT}
"""
    return Apache(tmp, conf, modules=("mime", "fcgid"))


@pytest.fixture(scope="module")
def site(searchable_tmp_factory):
    apache = start_apache(searchable_tmp_factory("fcgid"))
    yield apache
    apache.stop()


def get_json(url: str) -> dict:
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def test_script_serves_with_apaches_split_as_apaches_user(site):
    answer = get_json(site.url + "/app.fcgi/some/p%C3%A4th?x=1")
    environ = answer["environ"]
    assert environ["SCRIPT_NAME"] == "/app.fcgi"
    assert environ["PATH_INFO"] == "/some/p\u00e4th".encode().decode("latin-1")
    assert environ["QUERY_STRING"] == "x=1"
    assert environ["SERVER_SOFTWARE"].startswith("Apache")
    status = Path("/proc/%d/status" % answer["pid"]).read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid == pwd.getpwnam("www-data").pw_uid
    assert get_json(site.url + "/app.fcgi/")["environ"]["PATH_INFO"] == "/"


def test_a_post_body_and_concurrent_requests_over_several_processes(site):
    body = os.urandom(100_000)
    response = requests.post(site.url + "/app.fcgi/upload", data=body, timeout=30)
    assert response.status_code == 200 and response.json()["body_length"] == len(body)
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: requests.get(site.url + "/app.fcgi/sleep?s=1", timeout=30), range(3)))
    assert [(a.status_code, a.text) for a in answers] == [(200, "slept")] * 3
    assert time.monotonic() - started < 20


def test_processes_go_when_apache_stops(searchable_tmp_factory):
    apache = start_apache(searchable_tmp_factory("fcgid"))
    try:
        pid = get_json(apache.url + "/app.fcgi/")["pid"]
    finally:
        apache.stop()
    wait_for(lambda: not os.path.exists("/proc/%d" % pid), 15, what="the .fcgi process to exit")


def test_head_then_get_on_one_connection(site):
    assert_head_then_get(site.url + "/app.fcgi/x?q=1")
