#!/usr/bin/env python3
"""Python bytecodes per hello request through the engine, by function:
where the interpreted part of a request goes, counted exactly (a profiler's
samples move with a busy host; these do not).

    .venv/bin/python benchmarks/bytecodes.py                  # about 20 seconds
    .venv/bin/python benchmarks/bytecodes.py --compiled       # what the compiled core leaves interpreted
    .venv/bin/python benchmarks/bytecodes.py --top 60 --requests 1000

A `--no-master` worker serves hello requests that this script sends one at
a time on one kept connection (as `instructions.py` does); its loop thread,
which runs them, counts every bytecode it executes (`sys.settrace` with
opcode events).  The figures are the difference between a run with N
requests and one without, per request.  Tracing slows the worker a
hundredfold: count with it, time with `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from instructions import APPS, ROOT, drive  # benchmarks/instructions.py, beside this file
from run import build_compiled  # benchmarks/run.py

# Run in the worker: its loop thread counts the bytecodes of each function
# it executes, and writes them to OUT when the worker stops.
TRACED_WORKER = """
import collections, json, runpy, sys
import wsgi_fcgi.pool as pool

counts = collections.Counter()

def trace(frame, event, arg):
    frame.f_trace_opcodes = True
    frame.f_trace_lines = False
    code = frame.f_code
    key = "%s:%s" % (code.co_filename.rsplit("/", 1)[-1], code.co_qualname)
    def count(frame, event, arg):
        if event == "opcode":
            counts[key] += 1
        return count
    return count

run_loop_thread = pool.LoopThread.run

def traced_run(self):
    sys.settrace(trace)
    try:
        run_loop_thread(self)
    finally:
        sys.settrace(None)
        with open({out!r}, "w") as file:
            json.dump(counts, file)

pool.LoopThread.run = traced_run
sys.argv = ["wsgi_fcgi", "--no-master", "--bind", "127.0.0.1:{port}", "--threads", "8", "hello:app"]
runpy.run_module("wsgi_fcgi", run_name="__main__")
"""


def counted(tree: Path, requests: int, tmp: Path) -> Counter:
    """Bytecodes by function in the loop thread of a worker serving `requests` + 1 requests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp / "bytecodes.json"
    code = TRACED_WORKER.format(out=str(out), port=port)
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=APPS, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        drive(("127.0.0.1", port), requests)
        proc.terminate()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    counts = Counter(json.loads(out.read_text()))
    out.unlink()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--top", type=int, default=30, help="functions listed (default 30)")
    parser.add_argument("--compiled", action="store_true",
                        help="the wheel of `make wheel`: only what it leaves interpreted is counted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsgi-fcgi-bytecodes-") as name:
        tmp = Path(name)
        tree = ROOT
        if args.compiled:
            tree = tmp / "compiled"
            build_compiled(tree)
        per_request = counted(tree, args.requests, tmp)
        per_request.subtract(counted(tree, 0, tmp))
    total = sum(per_request.values())
    print("%s: %.0f bytecodes per hello request in the loop thread"
          % ("compiled" if args.compiled else "pure Python", total / args.requests))
    for function, count in per_request.most_common(args.top):
        print("%8.1f  %5.1f%%  %s" % (count / args.requests, 100 * count / total, function))


if __name__ == "__main__":
    main()
