"""The status page's ?html view in a real headless browser (Debian's chromium),
through nginx: the pool figures and one table row per worker, refreshed by
the browser, every value escaped.  The screenshot stays in the test's tmp dir."""

import re
import shutil
import subprocess
import threading

import pytest
import requests
from support import fastcgi_location, pool_status, wait_for, worker_pids

CHROMIUM = shutil.which("chromium")
STATUS = ("--status-path", "/fcgi-status")
HOSTILE_POOL = '<script>document.title="owned"</script>&"'


def chromium(tmp_path, url: str, *action: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--user-data-dir=%s" % (tmp_path / "chromium-profile"), "--window-size=1200,900", *action, url]
    return subprocess.run(command, capture_output=True, timeout=90, text=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-system-deps.sh)")
def test_html_status_page_in_a_headless_browser(start_wsgi_fcgi, start_nginx, tmp_path):
    server = start_wsgi_fcgi("metricsapp:app", "--workers", "2", "--pool-name", HOSTILE_POOL, *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    pids = wait_for(lambda: len(worker_pids(server.address, "/fcgi-status")) == 2
                    and worker_pids(server.address, "/fcgi-status"), 20, interval=0.2, what="2 workers")
    for _ in range(3):
        assert requests.get(nginx.url + "/", timeout=10).text == "hello"
    slow = threading.Thread(target=requests.get, args=(nginx.url + "/sleep?s=4&token=secret",),
                            kwargs={"timeout": 20})
    slow.start()
    try:
        wait_for(lambda: any(w["request_uri"] == "/sleep" for w in pool_status(server.address, "/fcgi-status")
                             ["worker_list"]), 10, interval=0.05, what="the slow request running")
        page = requests.get(nginx.url + "/fcgi-status?html", timeout=10)
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert '<meta http-equiv="refresh" content="5">' in page.text

        dom = chromium(tmp_path, nginx.url + "/fcgi-status?html", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        shot = chromium(tmp_path, nginx.url + "/fcgi-status?html", "--screenshot=%s" % (tmp_path / "status.png"))
        assert shot.returncode == 0, shot.stderr[-2000:]
    finally:
        slow.join(20)

    # The pool's name is shown as text: no element of its own, no script ran.
    assert "<title>wsgi-fcgi status: &lt;script&gt;document.title=\"owned\"&lt;/script&gt;&amp;\"</title>" in html
    assert "<script>" not in html
    workers_table = re.search(r'<table id="workers">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", workers_table, re.S)
    assert {int(re.search(r"<td[^>]*>(\d+)</td>", cells).group(1)) for _, cells in rows} == pids
    states = sorted(state for state, _ in rows)
    assert states in (["busy", "busy"], ["busy", "idle"])  # the status request, maybe the sleeper too
    assert "/sleep</td>" in workers_table and "secret" not in html  # no query string by default
    pool_table = re.search(r'<table class="figures" id="pool">(.*?)</table>', html, re.S).group(1)
    accepted = re.search(r"<th>accepted requests</th><td class=\"n\">(\d+)</td>", pool_table)
    assert accepted and int(accepted.group(1)) >= 3
    assert "<th>responses 2xx</th>" in html and "<th>duration &lt;= +Inf s</th>" in html

    png = (tmp_path / "status.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1200, 900)
