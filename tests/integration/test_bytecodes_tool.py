"""benchmarks/bytecodes.py, the exact count behind performance.md's budget of a
hello request, keeps working: it drives a real worker and finds the engine's
functions in its loop thread."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bytecodes_per_request_by_function():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bytecodes.py"), "--requests", "20",
                             "--top", "200"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    total = int(re.search(r"pure Python: (\d+) bytecodes per hello request", result.stdout).group(1))
    functions = dict((name, float(count)) for count, _, name in
                     (line.split() for line in result.stdout.splitlines()[1:]))
    assert 1000 < total < 20000, result.stdout
    # A request's bytecodes, one request's worth (the run without requests is subtracted)
    assert functions["protocol.py:decode_params"] > 100
    assert functions["wsgi.py:encode_head"] > 10
    assert functions["server.py:Server.handle_request"] > 10
