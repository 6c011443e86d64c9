"""The error log: peer data escaped in text lines, --error-log-format json,
--log-config (JSON and TOML dictConfig), --capture-output (print(), writes
to sys.stderr and to fd 2 reach the error log as records)."""

import json
import re
import threading

from support import wait_for

from wsgi_fcgi import client

FORGED_LINE = "2026-01-01T00:00:00.000+00:00 [1] [CRITICAL] wsgi_fcgi: forged"
HOSTILE_URI = "/sleep?s=1.2\r\n" + FORGED_LINE + "\x1b[2J"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


def _slow_hostile_request(address: str) -> None:
    response = client.request(address, "GET", "/sleep?s=1.2", timeout=20, extra_params=[("REQUEST_URI", HOSTILE_URI)])
    assert response.status == 200


def _read(path, needle: str) -> str:
    return wait_for(lambda: path.exists() and needle in (text := path.read_text()) and text, 10,
                    what="%r in %s" % (needle, path.name))


def test_peer_data_in_error_log_lines_text_and_json(start_wsgi_fcgi, tmp_path):
    text_log, json_log = tmp_path / "error.log", tmp_path / "error.json"
    common = ("--slow-request-timeout", "0.5")
    text_server = start_wsgi_fcgi("masterapp:app", *common, "--error-log", str(text_log))
    json_server = start_wsgi_fcgi("masterapp:app", *common, "--error-log", str(json_log),
                                  "--error-log-format", "json")
    requests = [threading.Thread(target=_slow_hostile_request, args=(server.address,))
                for server in (text_server, json_server)]
    for thread in requests:
        thread.start()
    for thread in requests:
        thread.join(30)

    text = _read(text_log, "slow request: GET")
    lines = text.splitlines()
    assert not any(line.startswith(FORGED_LINE[:30]) for line in lines)  # no line forged
    assert "\x1b" not in text and "\r" not in text
    (slow,) = [line for line in lines if "slow request: GET" in line]
    assert "slow request: GET /sleep?s=1.2\\x0D\\x0A" + FORGED_LINE + "\\x1B[2J running for" in slow
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d \[\d+\] \[WARNING\] ", slow)
    assert any("in sleeping_function" in line for line in lines)  # the stack keeps its lines

    _read(json_log, "slow request: GET")
    records = [json.loads(line) for line in json_log.read_text().splitlines()]  # every line is one object
    (slow_record,) = [r for r in records if r["message"].startswith("slow request: ")]
    assert slow_record["message"].startswith("slow request: GET " + HOSTILE_URI + " running for")  # lossless
    assert "in sleeping_function" in slow_record["message"]
    assert slow_record["level"] == "WARNING" and RFC3339.match(slow_record["time"]) and slow_record["pid"] > 0
    assert any(r["message"].startswith("master ") and r["logger"] == "wsgi_fcgi" for r in records)


LOG_CONFIG = {
    "formatters": {"custom": {"format": "CUSTOM %(levelname)s %(name)s %(process)d %(message)s"}},
    "handlers": {"file": {"class": "logging.FileHandler", "filename": "FILE", "formatter": "custom"}},
    "loggers": {"wsgi_fcgi": {"handlers": ["file"], "level": "INFO"}},
}
LOG_CONFIG_TOML = """
version = 1
[formatters.custom]
format = "CUSTOM %(levelname)s %(name)s %(process)d %(message)s"
[handlers.file]
class = "logging.FileHandler"
filename = "FILE"
formatter = "custom"
[loggers.wsgi_fcgi]
handlers = ["file"]
level = "INFO"
"""


def test_log_config_as_json_and_toml(start_wsgi_fcgi, tmp_path):
    json_out, toml_out = tmp_path / "from-json.log", tmp_path / "from-toml.log"
    json_conf, toml_conf = tmp_path / "logging.json", tmp_path / "logging.toml"
    json_conf.write_text(json.dumps(LOG_CONFIG).replace("FILE", str(json_out)))
    toml_conf.write_text(LOG_CONFIG_TOML.replace("FILE", str(toml_out)))
    servers = [start_wsgi_fcgi("masterapp:app", "--log-config", str(conf)) for conf in (json_conf, toml_conf)]
    for server, out in zip(servers, (json_out, toml_out), strict=True):
        assert client.request(server.address, "GET", "/", timeout=15).body == b"hello"
        text = _read(out, "serving on")  # a worker's line: the workers inherit the configuration
        assert re.search(r"^CUSTOM INFO wsgi_fcgi %d master %d: wsgi-fcgi .*, 1 worker" % (server.pid, server.pid),
                         text, re.M)
        assert "CUSTOM INFO wsgi_fcgi " in text.split("serving on")[0].splitlines()[-1]


def test_a_broken_log_config_is_one_line_at_start_up(start_wsgi_fcgi, tmp_path):
    cases = {
        "broken.json": ("{not json", "--log-config %s: Expecting property name"),
        "broken.toml": ("[a\n", "--log-config %s: "),
        "unknown.json": (json.dumps({"handlers": {"h": {"class": "no.such.Handler"}}}),
                         "--log-config %s: Unable to configure handler 'h'"),
        "missing.json": (None, "cannot read --log-config %s: No such file or directory"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        server = start_wsgi_fcgi("masterapp:app", "--log-config", str(path), wait=False, log_name=name + ".log")
        assert server.wait(20) == 1
        output = server.log().strip()
        assert len(output.splitlines()) == 1 and output.startswith("wsgi-fcgi: error: " + message % path), output


def test_capture_output_sends_print_and_fd_writes_to_the_error_log(start_wsgi_fcgi, tmp_path):
    error_log = tmp_path / "error.log"
    to_file = start_wsgi_fcgi("metricsapp:app", "--capture-output", "--error-log", str(error_log))
    to_stderr = start_wsgi_fcgi("metricsapp:app", "--capture-output", "--error-log-format", "json")
    for server in (to_file, to_stderr):
        assert client.request(server.address, "GET", "/print?text=hi%1B", timeout=15).body == b"printed"

    text = _read(error_log, "fd2: hi")
    assert re.search(r"\[INFO\] wsgi_fcgi\.stdout: stdout: hi\\x1B$", text, re.M), text
    assert re.search(r"\[WARNING\] wsgi_fcgi\.stderr: stderr: hi\\x1B$", text, re.M), text
    assert re.search(r"\[WARNING\] wsgi_fcgi\.stderr: fd2: hi\\x1B$", text, re.M), text  # a C-level write

    def captured():
        records = [json.loads(line) for line in to_stderr.log().splitlines() if line.startswith("{")]
        return [r for r in records if r["logger"] in ("wsgi_fcgi.stdout", "wsgi_fcgi.stderr")]
    records = wait_for(lambda: len(captured()) >= 3 and captured(), 10, what="3 captured lines")
    assert sorted(r["message"] for r in records) == ["fd2: hi\x1b", "stderr: hi\x1b", "stdout: hi\x1b"]  # once each
