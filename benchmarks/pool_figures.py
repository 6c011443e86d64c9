"""The figures of docs/process-manager.md: the first request after idle with
--pm ondemand (a fork and the app's import) and the PSS of each worker of the
Django example with and without --preload.

    .venv/bin/python benchmarks/pool_figures.py

Starts real servers (tests/support.py) on free loopback ports; about a minute.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import ROOT, WsgiFcgi, wait_children  # noqa: E402

from wsgi_fcgi import client  # noqa: E402

DJANGO = ROOT / "examples" / "django_app"
DJANGO_ENV = {"DJANGO_SETTINGS_MODULE": "djapp.settings"}


def first_request_after_idle(tmp, app, *args, cwd=None, env=None, runs=5):
    """Median ms of the first request once the pool is empty, and of the next ones."""
    server = WsgiFcgi(app, tmp, "--pm", "ondemand", "--workers", "2", "--worker-idle-timeout", "1", *args,
                      cwd=cwd, env=env, log_name="ondemand.log")
    cold, warm = [], []
    try:
        for _ in range(runs):
            wait_children(server.pid, 0, 20)
            for times in (cold, warm, warm, warm, warm, warm):
                started = time.perf_counter()
                assert client.request(server.address, "GET", "/", timeout=30).status < 400
                times.append(time.perf_counter() - started)
    finally:
        server.stop()
    return statistics.median(cold) * 1000, statistics.median(warm) * 1000


def pss_kib(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


def django_pss(tmp, *args, workers=4):
    """Mean PSS (MiB) of a worker, and the master's, once each worker served pages."""
    server = WsgiFcgi("djapp.wsgi:application", tmp, "--workers", str(workers), *args, cwd=DJANGO,
                      env=DJANGO_ENV, log_name="pss.log")
    try:
        pids = wait_children(server.pid, workers, 30)
        for _ in range(50):
            client.request(server.address, "GET", "/", timeout=30)
        time.sleep(1)
        return statistics.mean(pss_kib(pid) for pid in pids) / 1024, pss_kib(server.pid) / 1024
    finally:
        server.stop()


def main():
    tmp = Path(tempfile.mkdtemp(prefix="pool-figures-"))
    print("first request after idle / next requests, median ms:")
    print("  masterapp            %6.1f / %.2f" % first_request_after_idle(tmp, "masterapp:app"))
    print("  django               %6.1f / %.2f" % first_request_after_idle(
        tmp, "djapp.wsgi:application", cwd=DJANGO, env=DJANGO_ENV))
    print("  django --preload     %6.1f / %.2f" % first_request_after_idle(
        tmp, "djapp.wsgi:application", "--preload", cwd=DJANGO, env=DJANGO_ENV))
    print("PSS per worker / master, MiB (django, 4 workers):")
    print("  without --preload    %6.1f / %.1f" % django_pss(tmp))
    print("  with --preload       %6.1f / %.1f" % django_pss(tmp, "--preload"))


if __name__ == "__main__":
    main()
