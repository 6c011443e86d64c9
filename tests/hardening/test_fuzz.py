"""Fuzzing the parser and the connection state machine (see fuzz_targets.py).

The hypothesis runs are bounded by FUZZ_EXAMPLES (default 500 examples per
test, a few seconds); every file in corpus/ is replayed as a plain test.
"""

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_targets  # noqa: E402

from wsgi_fcgi import protocol as p  # noqa: E402
from wsgi_fcgi.client import cgi_params, encode_request  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CORPUS_FILES = sorted(fuzz_targets.CORPUS.glob("*")) if fuzz_targets.CORPUS.is_dir() else []


def keep_if_failing(data: bytes) -> None:
    try:
        fuzz_targets.fuzz_one(data)
    except BaseException:
        fuzz_targets.save_to_corpus(data)
        raise


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_raw_bytes(data):
    keep_if_failing(data)


records = st.builds(
    lambda version, rtype, rid, content, padding: bytes(
        (version, rtype, rid >> 8, rid & 0xFF, len(content) >> 8, len(content) & 0xFF, padding, 0))
    + content + b"\0" * padding,
    st.sampled_from([1, 1, 1, 1, 1, 1, 0, 2]),
    st.integers(0, 13),
    st.sampled_from([0, 1, 2, 0xFFFF]),
    st.one_of(st.binary(max_size=64),
              st.sampled_from([b"\0\x01\x01\0\0\0\0\0", b"\0\x02\0\0\0\0\0\0", b"\0\x03\x01\0\0\0\0\0",
                               b"\0\x09\0\0\0\0\0\0", p.encode_pairs([(b"FCGI_MAX_REQS", b"")]),
                               p.encode_pairs([(b"A" * 200, b"B" * 300)]), b"\x80\0\0\x10\x05abc"])),
    st.integers(0, 9))


@FUZZ
@given(st.lists(records, max_size=24), st.integers(0, 40))
def test_fuzz_record_sequences(stream, chunk):
    data = b"".join(stream)
    try:
        fuzz_targets.run_connection(data, chunk)
    except BaseException:
        fuzz_targets.save_to_corpus(data)
        raise


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_name_value_pairs(data):
    fuzz_targets.run_pairs(data)


@FUZZ
@given(st.integers(1, 0xFFFF), st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)),
                                        max_size=8),
       st.binary(max_size=3000), st.integers(1, 97))
def test_valid_requests_always_start(request_id, pairs, body, chunk):
    """Well-formed requests, split anywhere, always give RequestStarted and the whole body."""
    from wsgi_fcgi.connection import RequestStarted, ServerConnection, StdinReceived

    data = encode_request(request_id, pairs, body)
    conn = ServerConnection()
    events = []
    for start in range(0, len(data), chunk):
        events += conn.receive_data(data[start:start + chunk])
    started = [e for e in events if type(e) is RequestStarted]
    assert len(started) == 1 and started[0].params == [(n.decode("latin-1"), v.decode("latin-1")) for n, v in pairs]
    assert b"".join(e.data for e in events if type(e) is StdinReceived) == body
    assert not conn.mid_record


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[f.name for f in CORPUS_FILES])
def test_corpus_replay(path):
    fuzz_targets.fuzz_one(path.read_bytes())


def test_corpus_is_not_empty():
    assert len(CORPUS_FILES) >= 10


def test_stream_from_bytes_reaches_requests():
    """The byte mapping the fuzzers use must produce real requests, or it fuzzes nothing."""
    from wsgi_fcgi.connection import RequestStarted, ServerConnection

    request = encode_request(1, cgi_params("GET", "/"))
    assert any(type(e) is RequestStarted for e in ServerConnection().receive_data(request))
    begin = next(c for c in range(256) if c % 13 == p.BEGIN_REQUEST and c & 0x40 and (c >> 4) % 4)
    params = next(c for c in range(256) if c % 13 == p.PARAMS and (c >> 4) % 4 == (begin >> 4) % 4)
    data = fuzz_targets.stream_from_bytes(bytes((begin, 0, params, 0)))
    assert any(type(e) is RequestStarted for e in ServerConnection().receive_data(data))


def test_atheris_run_bounded(tmp_path):
    """Coverage-guided: a few seconds of atheris from the corpus (skipped if not installed)."""
    pytest.importorskip("atheris")
    import shutil
    import subprocess

    work = tmp_path / "corpus"
    shutil.copytree(fuzz_targets.CORPUS, work)
    seconds = os.environ.get("FUZZ_SECONDS", "3")
    run = subprocess.run([sys.executable, fuzz_targets.__file__, "-max_total_time=" + seconds,
                          "-artifact_prefix=%s/" % tmp_path, str(work)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=int(seconds) + 60)
    found = sorted(tmp_path.glob("crash-*"))  # libFuzzer's artifacts
    for path in found:  # keep what it found as a regression case
        fuzz_targets.save_to_corpus(path.read_bytes())
    assert run.returncode == 0 and not found, run.stderr[-3000:]
    assert "Done" in run.stderr
