#!/usr/bin/env python3
"""Instructions per hello request, pure Python against the compiled core,
counted by valgrind's callgrind: the same count on a busy host, so a change
of a few percent shows where req/s through nginx cannot (docs/performance.md).

    .venv/bin/python benchmarks/instructions.py                 # about 3 minutes
    .venv/bin/python benchmarks/instructions.py --requests 500  # quicker, coarser

Two measures per build, each the difference between a run with N requests
and one with none (start-up and the first request cancel out):

* engine: `python -m wsgi_fcgi --no-master` under callgrind, serving N hello
  requests that this script sends one at a time on one kept connection
  (the FastCGI records nginx sends, with `fastcgi_keep_conn on`);
* core: N requests without I/O in one process (records in, connection,
  environ, app, records out), as `make bench-micro`'s whole-request test.

The compiled build is the wheel of `make wheel`, unpacked into a temporary
directory.  Needs valgrind (Debian's package) and the project's venv.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "benchmarks" / "harness" / "apps"
sys.path.insert(0, str(ROOT))

from run import build_compiled  # noqa: E402  (benchmarks/run.py, beside this file)

from wsgi_fcgi import client  # noqa: E402
from wsgi_fcgi import protocol as p  # noqa: E402

HEADERS = [("Host", "127.0.0.1:8080"), ("User-Agent", "wrk"), ("Accept", "*/*")]

CORE_LOOP = """
import sys
sys.path.insert(0, {micro!r})
import test_core_bench as bench
from wsgi_fcgi.connection import ServerConnection
from wsgi_fcgi.environ import build_environ
from wsgi_fcgi.wsgi import run_app
for _ in range({n}):
    event = ServerConnection().receive_data(bench.REQUEST)[0]
    run_app(bench.hello, build_environ(event.params, bench.BASE, ""), bench.NullTransport())
"""


def callgrind(cmd: list, tree: Path, tmp: Path, during=None) -> int:
    """Instructions that `cmd` executed (under callgrind), with `during()`
    run while it does; `cmd` imports wsgi_fcgi from `tree`."""
    out = tmp / "callgrind.out"
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % out, *cmd],
                            cwd=APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if during is not None:
            during()
            proc.terminate()
        proc.wait(timeout=600)
    finally:
        proc.kill()
    match = re.search(r"^summary: (\d+)", out.read_text(), re.M)
    out.unlink()
    return int(match.group(1))


def drive(address: tuple, requests: int) -> None:
    """One kept connection, the first request plus `requests` more, one at a time."""
    deadline = time.monotonic() + 120
    while True:
        try:
            sock = socket.create_connection(address, timeout=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    data = client.encode_request(1, client.cgi_params("GET", "/", headers=HEADERS), keep_conn=True)
    parser = p.RecordParser()
    with sock:
        for _ in range(requests + 1):
            sock.sendall(data)
            response = client.read_response(sock, 1, parser)
            assert response.status == 200, response


def engine(tree: Path, requests: int, tmp: Path) -> int:
    def run(n: int) -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        cmd = [sys.executable, "-m", "wsgi_fcgi", "--no-master", "--bind", "127.0.0.1:%d" % port,
               "--threads", "8", "hello:app"]
        return callgrind(cmd, tree, tmp, during=lambda: drive(("127.0.0.1", port), n))
    return run(requests) - run(0)


def core(tree: Path, requests: int, tmp: Path) -> int:
    def run(n: int) -> int:
        code = CORE_LOOP.format(micro=str(ROOT / "benchmarks" / "micro"), n=n)
        return callgrind([sys.executable, "-c", code], tree, tmp)
    return run(requests) - run(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsgi-fcgi-instructions-") as name:
        tmp = Path(name)
        build_compiled(tmp / "compiled")
        builds = {"pure Python": ROOT, "compiled": tmp / "compiled"}
        results = {}
        for label, tree in builds.items():
            results[label] = (engine(tree, args.requests, tmp) / args.requests,
                              core(tree, args.requests, tmp) / args.requests)
            print("%-12s engine %7.1fk  core %7.1fk instructions per request" % (
                label, results[label][0] / 1000, results[label][1] / 1000), flush=True)
    pure, compiled = results["pure Python"], results["compiled"]
    print("compiled / pure: engine %.2f, core %.2f" % (compiled[0] / pure[0], compiled[1] / pure[1]))


if __name__ == "__main__":
    main()
