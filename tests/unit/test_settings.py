"""The one declaration of every tunable, and everything derived from it:
the command line, the environment, Server's keyword arguments, the gunicorn
worker's mapping."""

import inspect

import pytest

from wsgi_fcgi import settings
from wsgi_fcgi.server import Server
from wsgi_fcgi.settings import SETTINGS, SettingError, build_parser

# Options of the command line that are not settings of the server.
_INVOCATION_FLAGS = {"-h", "--help", "-c", "--config", "--check-config", "--print-config", "--version"}


def parser_flags():
    return {flag for action in build_parser("0")._actions for flag in action.option_strings}


def test_every_command_line_option_is_a_declared_setting_and_back():
    declared = {flag for setting in SETTINGS for flag in setting.flags}
    assert parser_flags() - _INVOCATION_FLAGS == declared


def test_server_takes_exactly_the_server_settings():
    server_names = {s.name for s in SETTINGS if s.server}
    assert set(settings.server_defaults()) == server_names | {"multiprocess"}
    for name in server_names:
        settings.check_server_options({name: settings.BY_NAME[name].default})
    with pytest.raises(TypeError):
        settings.check_server_options({"keepalive_timeout": 5})
    assert "options" in inspect.signature(Server).parameters  # the rest of Server's keywords come from here


def test_server_options_are_parsed_and_checked_as_on_the_command_line():
    assert settings.check_server_options({"max_body_size": "10M"}) == {"max_body_size": 10 << 20}
    with pytest.raises(SettingError):
        settings.check_server_options({"threads": 0})
    with pytest.raises(SettingError):
        settings.check_server_options({"keep_alive": -1})


def test_each_setting_has_help_a_group_and_a_parsable_default():
    for setting in SETTINGS:
        assert setting.help and setting.group in settings.GROUPS, setting.name
        if setting.default not in (None, [], False):
            assert setting.parse(setting.default) == setting.default, setting.name


def test_environment_variables_are_named_after_the_settings():
    values = settings.read_environment({"WSGI_FCGI_THREADS": "3", "WSGI_FCGI_BIND": "127.0.0.1:1,unix:/x.sock",
                                        "WSGI_FCGI_MAX_BODY_SIZE": "1K", "OTHER": "1"})
    assert values == {"threads": 3, "bind": ["127.0.0.1:1", "unix:/x.sock"], "max_body_size": 1024}
    with pytest.raises(SettingError, match="WSGI_FCGI_THREADS"):
        settings.read_environment({"WSGI_FCGI_THREADS": "many"})


def test_gunicorn_names_exist_in_gunicorns_config():
    gunicorn_config = pytest.importorskip("gunicorn.config")
    known = gunicorn_config.Config().settings
    cfg = gunicorn_config.Config()
    for setting in SETTINGS:
        if setting.gunicorn:
            assert setting.gunicorn in known, setting.name
    options = settings.gunicorn_server_options(cfg)
    assert options["threads"] == cfg.threads and options["max_connections"] == cfg.worker_connections
    cfg.set("keepalive", 0)
    assert settings.gunicorn_server_options(cfg)["keep_alive"] == 0.001  # "no idle connections"


def test_sizes_and_numbers_never_raise_anything_but_a_setting_error():
    for text in ("", "abc", "1.5M", "-1", "9" * 5000, "1e3", "0x10", None, True, [1]):
        for parse in (settings.size, settings.positive, settings.count, settings.seconds):
            try:
                parse(text)
            except SettingError:
                pass
