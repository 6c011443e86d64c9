"""One configuration surface: --config FILE (TOML), WSGI_FCGI_* environment
variables, the command line over both; --check-config, --print-config, and
HUP re-reading the file (environment fixed at start)."""

import signal
import subprocess

import pytest
from support import APPS, PYTHON, WsgiFcgi, project_env, wait_for

from wsgi_fcgi import client
from wsgi_fcgi import settings as settings_module


def run_cli(*args, env=None, cwd=APPS):
    return subprocess.run([PYTHON, "-m", "wsgi_fcgi", *args], cwd=cwd, env=project_env(env), capture_output=True,
                          text=True, timeout=30)


def printed(done) -> dict:
    """--print-config's lines: name -> (value text, source)."""
    assert done.returncode == 0, done.stderr
    values = {}
    for line in done.stdout.splitlines():
        assignment, _, source = line.partition("  # ")
        name, _, value = assignment.partition(" = ")
        values[name] = (value, source)
    return values


def test_precedence_command_line_over_environment_over_file_over_default(tmp_path):
    config = tmp_path / "app.toml"
    config.write_text('app = "envapp:app"\nthreads = 3\nworkers = 2\nkeep-alive = 10\n'
                      'bind = ["127.0.0.1:9100", "unix:/tmp/x.sock"]\n')
    done = run_cli("--config", str(config), "--print-config", "--workers", "4",
                   env={"WSGI_FCGI_THREADS": "5", "WSGI_FCGI_WORKERS": "6", "WSGI_FCGI_BIND": "127.0.0.1:9200"})
    values = printed(done)
    assert values["app"] == ("'envapp:app'", "")
    assert values["workers"] == ("4", "command line")
    assert values["threads"] == ("5", "environment")
    assert values["bind"] == ("['127.0.0.1:9200']", "environment")
    assert values["keep_alive"] == ("10.0", "config file")
    assert values["backlog"] == ("1024", "default")


def test_config_file_as_a_wsgi_fcgi_table_and_env_config(tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('[wsgi_fcgi]\napp = "envapp:app"\nmax_body_size = "10M"\n')
    values = printed(run_cli("--print-config", env={"WSGI_FCGI_CONFIG": str(config)}))
    assert values["max_body_size"] == (str(10 << 20), "config file")


@pytest.mark.parametrize("text, expected", [
    ("threads = 0\n", "threads: 0 must be at least 1"),
    ("thraeds = 4\n", "unknown setting 'thraeds'"),
    ("threads = [\n", "app.toml"),
    ("workers = 5000\n", "more than 512"),
])
def test_broken_config_file_is_one_line(tmp_path, text, expected):
    config = tmp_path / "app.toml"
    config.write_text(text)
    done = run_cli("--config", str(config), "--check-config", "envapp:app")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsgi-fcgi: error:") and expected in lines[0], done.stderr


def test_bad_environment_value_names_the_variable():
    done = run_cli("--check-config", "envapp:app", env={"WSGI_FCGI_KEEP_ALIVE": "soon"})
    assert done.returncode == 1 and "WSGI_FCGI_KEEP_ALIVE" in done.stderr and "Traceback" not in done.stderr


def test_check_config(tmp_path):
    done = run_cli("--check-config", "envapp:app")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "wsgi-fcgi: configuration ok, app envapp:app loads\n"
    (tmp_path / "broken.py").write_text("def app(environ, start_response):\n    return [\n")
    done = run_cli("--check-config", "broken:app", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.startswith("wsgi-fcgi: error:")]
    assert len(lines) == 1 and "broken.py, line 2" in lines[0] and "Traceback" not in done.stderr


def test_every_setting_has_an_environment_variable_and_a_reload_kind():
    for setting in settings_module.SETTINGS:
        assert setting.env_name == "WSGI_FCGI_" + setting.name.upper()
        assert setting.reload in ("hup", "restart"), setting.name
    restart = {s.name for s in settings_module.SETTINGS if s.reload == "restart"}
    assert {"bind", "backlog", "socket_mode", "user", "pid"} <= restart
    assert not {"threads", "chdir", "max_body_size"} & restart


def body_status(address: str, size: int) -> int:
    return client.request(address, "POST", "/upload", body=b"x" * size, timeout=10).status


def test_hup_with_an_access_log_in_the_default_format_reports_no_change(tmp_path):
    """--access-log without --access-log-format: the default format is not
    written back into the settings, where every HUP saw it "changed"."""
    access = tmp_path / "access.log"
    server = WsgiFcgi("envapp:app", tmp_path, "--access-log", str(access))
    try:
        assert body_status(server.address, 10) == 200
        server.send_signal(signal.SIGHUP)
        wait_for(lambda: "stopped (exit code 0)" in server.log(), 20, interval=0.1,
                 what="the old worker to stop once the new one is ready")
        assert body_status(server.address, 10) == 200
        assert "access_log_format" not in server.log()
        wait_for(lambda: access.read_text().count('"POST /upload HTTP/1.1" 200') == 2, 5, interval=0.1,
                 what="both requests in the access log, in the default format")
    finally:
        server.stop()


def test_hup_rereads_the_file_logs_changes_and_keeps_the_environment(tmp_path):
    config = tmp_path / "app.toml"
    config.write_text("max_body_size = 100\n")
    server = WsgiFcgi("envapp:app", tmp_path, "--config", str(config), env={"WSGI_FCGI_MAX_REQUESTS": "1000"})
    try:
        assert body_status(server.address, 200) == 413
        config.write_text("max_body_size = 1000\nbacklog = 10\nmax_requests = 5\n")
        server.send_signal(signal.SIGHUP)
        wait_for(lambda: "stopped (exit code 0)" in server.log(), 20, interval=0.1,
                 what="the old worker to stop once the new one is ready")
        assert body_status(server.address, 200) == 200
        log = server.log()
        assert "max_body_size changed from 100 to 1000" in log
        assert "backlog changed to 10: needs a restart, keeping 1024" in log
        assert "max_requests" not in log  # the environment (1000) wins over the file, as at start

        # A broken file at HUP: the settings stay, the error is logged, the pool keeps serving.
        config.write_text("max_body_size = [\n")
        server.send_signal(signal.SIGHUP)
        wait_for(lambda: "keeping the current settings" in server.log(), 20, interval=0.2, what="the error")
        error = [line for line in server.log().splitlines() if "keeping the current settings" in line][0]
        assert "app.toml" in error
        wait_for(lambda: "starting 1 new worker" in server.log().split(error)[1], 20, interval=0.2,
                 what="the reload with the kept settings")
        assert body_status(server.address, 200) == 200 and body_status(server.address, 2000) == 413
    finally:
        server.stop()
