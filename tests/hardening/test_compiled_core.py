"""The compiled core (setup.py: protocol.py, connection.py and environ.py
built by mypyc) against its reference, the .py files of the checkout.

`make test` runs the suite twice: on the checkout (pure Python), then on the
wheel with the compiled core (WSGI_FCGI_TEST_TREE, see tests/support.py).
Each run first checks that it tests the build it was asked for; the
compiled run then feeds the same inputs to both builds and wants the same
events, records, pairs, environs and errors.
"""

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_targets  # noqa: E402
from support import PACKAGE_TREE, PYTHON, ROOT, project_env  # noqa: E402

import wsgi_fcgi  # noqa: E402
from wsgi_fcgi import connection, environ, protocol  # noqa: E402

COMPILED_RUN = bool(os.environ.get("WSGI_FCGI_TEST_TREE"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
compiled_only = pytest.mark.skipif(not COMPILED_RUN, reason="the compiled run of `make test` compares the builds")


def test_the_suite_imports_the_build_it_was_asked_for():
    assert wsgi_fcgi.core_is_compiled() is COMPILED_RUN, (protocol.__file__, connection.__file__, environ.__file__)
    assert Path(wsgi_fcgi.__file__).resolve().is_relative_to(PACKAGE_TREE)


def test_setup_compiles_the_core_modules():
    sys.path.insert(0, str(ROOT))
    try:
        setup = importlib.import_module("setup")
    finally:
        sys.path.remove(str(ROOT))
    assert setup.COMPILED_MODULES == ["wsgi_fcgi/%s.py" % name for name in wsgi_fcgi.CORE_MODULES]


def test_the_servers_the_tests_start_run_the_same_build():
    result = subprocess.run([PYTHON, "-m", "wsgi_fcgi", "--version"], cwd=ROOT / "tests" / "apps",
                            env=project_env(), capture_output=True, text=True, timeout=30)
    build = "compiled core" if COMPILED_RUN else "pure Python"
    assert result.stdout.strip() == "wsgi-fcgi %s (%s)" % (wsgi_fcgi.__version__, build), result


def reference_core():
    """protocol, connection and environ from the checkout's .py files, as a package of their own."""
    name = "wsgi_fcgi_reference"
    if name not in sys.modules:
        source = ROOT / "wsgi_fcgi"
        spec = importlib.util.spec_from_file_location(name, source / "__init__.py",
                                                      submodule_search_locations=[str(source)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    ref_protocol = importlib.import_module(name + ".protocol")
    ref_connection = importlib.import_module(name + ".connection")
    ref_environ = importlib.import_module(name + ".environ")
    assert all(m.__file__.endswith(".py") for m in (ref_protocol, ref_connection, ref_environ))
    return ref_protocol, ref_connection, ref_environ


def outcome(call, *args):
    """What a call gives, comparable across builds: its value as plain
    tuples, or the ProtocolError's message."""
    try:
        value = call(*args)
    except Exception as exc:  # the builds' ProtocolError classes differ: compare by name and text
        return ("raises", type(exc).__name__, str(exc))
    if isinstance(value, list):
        return [(type(item).__name__, tuple(item)) if isinstance(item, tuple) else item for item in value]
    return value


def connection_outcomes(module, data: bytes, chunk: int) -> list:
    conn = module.ServerConnection(max_requests=3, max_params_size=4096)
    step = chunk or len(data) or 1
    outcomes = []
    for start in range(0, len(data), step):
        events = outcome(conn.receive_data, data[start:start + step])
        outcomes.append(events)
        if events and events[0] == "raises":
            break
        for kind, fields in events:
            if kind == "RequestStarted" and fields[0] % 2 or kind == "ParamsTooLarge":
                conn.finish_request(fields[0])  # as the fuzz target does: ids freed and reused
    return outcomes


@compiled_only
@FUZZ
@given(st.binary(max_size=2048), st.integers(0, 40))
def test_connection_events_are_the_reference_s(data, chunk):
    _, ref_connection, _ = reference_core()
    for stream in (data, fuzz_targets.stream_from_bytes(data)):
        assert connection_outcomes(connection, stream, chunk) == connection_outcomes(ref_connection, stream, chunk)


@compiled_only
@FUZZ
@given(st.binary(max_size=1024), st.integers(0, 40))
def test_records_and_pairs_are_the_reference_s(data, chunk):
    ref_protocol, _, _ = reference_core()
    assert outcome(protocol.decode_pairs, data) == outcome(ref_protocol.decode_pairs, data)
    assert outcome(protocol.decode_params, data) == outcome(ref_protocol.decode_params, data)
    stream = fuzz_targets.stream_from_bytes(data)
    compiled_parser, ref_parser = protocol.RecordParser(), ref_protocol.RecordParser()
    step = chunk or len(stream) or 1
    for start in range(0, len(stream), step):
        piece = memoryview(stream)[start:start + step]
        assert outcome(compiled_parser.feed, piece) == outcome(ref_parser.feed, piece)
        assert compiled_parser.pending_bytes == ref_parser.pending_bytes


@compiled_only
@FUZZ
@given(st.integers(1, 0xFFFF), st.binary(max_size=70000), st.integers(0, 0xFFFFFFFF))
def test_encoders_are_the_reference_s(request_id, data, app_status):
    ref_protocol, _, _ = reference_core()
    for name, args in [("encode_stream", (protocol.STDOUT, request_id, data)),
                       ("stream_parts", (protocol.STDERR, request_id, data)),
                       ("encode_stdout_end", (request_id, app_status)),
                       ("encode_params", (request_id, [(data[:300], data[300:600])])),
                       ("encode_get_values_result", ([(b"FCGI_MAX_CONNS", data[:9])],)),
                       ("encode_record", (protocol.STDIN, request_id, data)),
                       ("encode_record", (protocol.STDIN, request_id, bytearray(data))),
                       ("encode_stream", (protocol.STDOUT, request_id, memoryview(data))),
                       ("stream_parts", (protocol.STDOUT, request_id, bytearray(data)))]:
        compiled, reference = outcome(getattr(protocol, name), *args), outcome(getattr(ref_protocol, name), *args)
        if isinstance(compiled, list):  # stream_parts: headers, memoryviews and padding
            compiled, reference = [bytes(b) for b in compiled], [bytes(b) for b in reference]
        assert compiled == reference, name


cgi_names = st.sampled_from(["REQUEST_URI", "SCRIPT_NAME", "PATH_INFO", "HTTPS", "REQUEST_SCHEME", "HTTP_COOKIE",
                             "HTTP_HOST", "HTTP_X", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "REQUEST_METHOD"])
cgi_values = st.one_of(st.sampled_from(["/", "/app", "/app/x", "/a%2Fb/%e2%82%ac", "http://h/x?y", "on", "https",
                                        "", "/app/"]), st.text(max_size=20))


@compiled_only
@FUZZ
@given(st.lists(st.tuples(cgi_names, cgi_values), max_size=12), st.sampled_from(["", "/app", "/app/x"]))
def test_environs_are_the_reference_s(params, script_name):
    _, _, ref_environ = reference_core()
    native = [(name, value.encode("utf-8").decode("latin-1")) for name, value in params]  # as decode_params gives them
    base = {"wsgi.version": (1, 0), "wsgi.multithread": True}
    assert outcome(environ.build_environ, native, base, script_name) == outcome(ref_environ.build_environ, native, base,
                                                                               script_name)
