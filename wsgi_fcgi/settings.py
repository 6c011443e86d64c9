"""Every tunable, declared once.

Each `Setting` gives a name, its command-line flags, how a text value is
parsed, its default, its help and its group.  From this one list derive:

* the command line (`build_parser`), the config file (`--config FILE`, TOML)
  and the environment (`WSGI_FCGI_<NAME>`), merged by `load` (command line >
  environment > config file > default), each value remembering its source;
* the keyword arguments of `server.Server` (`server=True` settings);
* the gunicorn worker's mapping (`gunicorn="cfg_name"`);
* the README's option tables (`markdown_table`, checked by a test).

The model is gunicorn's `config.Setting` and waitress's `Adjustments`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

#: Environment variables named ENV_PREFIX + the setting's name in upper case.
ENV_PREFIX = "WSGI_FCGI_"


class SettingError(ConfigError, ValueError):
    """A value that cannot be parsed or is out of range: one line for the user."""


# -- value types: text -> value, raising SettingError with a clear reason -------

def _whole(text: Any, minimum: int) -> int:
    if isinstance(text, bool):
        raise SettingError("%r is not a whole number" % (text,))
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise SettingError("%r is not a whole number" % (text,)) from None
    if value < minimum:
        raise SettingError("%s must be at least %d" % (text, minimum))
    return value


def positive(text: Any) -> int:
    return _whole(text, 1)


def count(text: Any) -> int:
    return _whole(text, 0)


#: --workers above this is a typo or a fork storm, not a pool: each worker is
#: a whole interpreter with its own copy of the app (tens of MB), and one
#: worker runs --threads requests; 512 processes is far past what any
#: machine serves better than with fewer workers and more threads.
MAX_WORKERS = 512


def worker_count(text: Any) -> int:
    value = _whole(text, 1)
    if value > MAX_WORKERS:
        raise SettingError("%d workers is more than %d (add --threads instead)" % (value, MAX_WORKERS))
    return value


def seconds(text: Any) -> float:
    if isinstance(text, bool):
        raise SettingError("%r is not a number of seconds" % (text,))
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SettingError("%r is not a number of seconds" % (text,)) from None
    if not value >= 0 or value == float("inf"):
        raise SettingError("%s is not a number of seconds >= 0" % (text,))
    return value


_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size(text: Any) -> int:
    """Bytes, with an optional K, M or G suffix (powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        number, factor = str(text), 1
    else:
        number, factor = str(text).strip().lower(), 1
    if number.endswith("b") and number[-2:-1] in _SIZE_UNITS:
        number = number[:-1]
    if number[-1:] in _SIZE_UNITS:
        number, factor = number[:-1], _SIZE_UNITS[number[-1]]
    if not number.isdigit() or not number.isascii():
        raise SettingError("%r is not a size like 1048576, 512K or 10M" % (text,))
    if len(number) > 18:
        raise SettingError("%s is too large a size" % (text,))
    return int(number) * factor


def octal(text: Any) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    try:
        return int(str(text), 8)
    except ValueError:
        raise SettingError("%r is not an octal mode like 0660" % (text,)) from None


def string(text: Any) -> str:
    if not isinstance(text, str):
        raise SettingError("%r is not a string" % (text,))
    return text


def boolean(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingError("%r is not true or false" % (text,))


def string_list(text: Any) -> list:
    """A list (config file) or a comma-separated string (environment)."""
    if isinstance(text, str):
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(text, (list, tuple)) and all(isinstance(item, str) for item in text):
        return list(text)
    raise SettingError("%r is not a list of strings" % (text,))


def choice(*values: str) -> Callable[[Any], str]:
    def parse(text: Any) -> str:
        value = str(text).lower()
        if value not in values:
            raise SettingError("%r is not one of %s" % (text, ", ".join(values)))
        return value
    parse.choices = values  # type: ignore[attr-defined]
    return parse


# -- the declaration --------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    name: str
    flags: tuple
    parse: Callable[[Any], Any]
    default: Any
    help: str
    group: str
    metavar: str | None = None
    #: "store", "append" (repeatable: a list) or "flag" (on when given)
    action: str = "store"
    #: a keyword argument of server.Server
    server: bool = False
    #: the gunicorn setting (cfg attribute) the gunicorn worker reads it from
    gunicorn: str | None = None
    #: how the README shows the default, when str(default) is not it
    shown_default: str | None = None
    #: what a change does at HUP: "hup" (the new workers use it) or
    #: "restart" (the master keeps the value it started with)
    reload: str = "hup"

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return self.flags[-1]

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None or self.default == [] or self.default is False:
            return "off"
        if self.parse is octal:
            return "0%o" % self.default
        if isinstance(self.default, float) and self.default.is_integer():
            return "%d" % self.default
        return str(self.default)


LISTENING, APP, LIMITS, PROCESS, OBSERVING = "listening", "the app", "limits", "process manager", "observing"
GROUPS = (LISTENING, APP, LIMITS, PROCESS, OBSERVING)

S = Setting
SETTINGS: tuple = (
    # -- listening
    S("bind", ("-b", "--bind"), string, [], "HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable "
      "(default 127.0.0.1:9000, or the listening socket on fd 0)", LISTENING, "ADDR", action="append",
      shown_default="127.0.0.1:9000", reload="restart"),
    S("backlog", ("--backlog",), positive, 1024, "listen backlog", LISTENING, "N", server=True,
      gunicorn="backlog", reload="restart"),
    S("socket_mode", ("--socket-mode",), octal, 0o660, "permissions of a unix socket, octal", LISTENING,
      "MODE", server=True, reload="restart"),
    S("socket_owner", ("--socket-owner",), string, None, "owner (user name or uid) of a unix socket, like "
      "php-fpm's listen.owner (needs root)", LISTENING, "USER", reload="restart"),
    S("socket_group", ("--socket-group",), string, None, "group of a unix socket, like php-fpm's "
      "listen.group: make it the web server's group", LISTENING, "GROUP", reload="restart"),
    S("allowed_servers", ("--allowed-servers",), string, None, "peers allowed over TCP, IP or network, "
      "comma-separated (default: env FCGI_WEB_SERVER_ADDRS, else any)", LISTENING, "IP,...", server=True),
    # -- the app
    S("script_name", ("--script-name",), string, "", "where the app is mounted, e.g. /app (default: the root)",
      APP, "PREFIX", server=True, shown_default='""'),
    S("chdir", ("--chdir",), string, None, "change to DIR before loading the app", APP, "DIR"),
    S("workers", ("-w", "--workers"), worker_count, 1, "worker processes; the most with --pm dynamic "
      "or ondemand (at most %d)" % MAX_WORKERS, APP, "N"),
    S("threads", ("--threads",), positive, 8, "request threads per worker", APP, "N", server=True,
      gunicorn="threads"),
    # -- limits
    S("max_body_size", ("--max-body-size",), size, 0, "refuse larger request bodies with 413 (0: no limit)",
      LIMITS, "BYTES", server=True),
    S("max_params_size", ("--max-params-size",), size, 1 << 20, "refuse larger FCGI_PARAMS with 431 (a record "
      "counts at least 64 bytes, and each name-value pair 64: the memory they hold)",
      LIMITS, "BYTES", server=True, shown_default="1M"),
    S("max_connections", ("--max-connections",), positive, 1024,
      "open connections per worker; more wait in the backlog", LIMITS, "N", server=True,
      gunicorn="worker_connections"),
    S("max_queue", ("--max-queue",), positive, 256, "requests waiting for a thread before 503", LIMITS, "N",
      server=True),
    S("max_requests_per_connection", ("--max-requests-per-connection",), positive, 100,
      "requests one connection may have in flight (FCGI_MAX_REQS); more get FCGI_OVERLOADED", LIMITS, "N",
      server=True),
    S("spool_size", ("--spool-size",), size, 1 << 20, "request body bytes kept in memory before it moves "
      "to a temporary file", LIMITS, "BYTES", server=True, shown_default="1M"),
    S("output_buffer_size", ("--output-buffer-size",), size, 1 << 20, "response bytes queued for a peer "
      "that reads slowly before the app's thread waits (streamed responses) or the connection is dropped "
      "(answers the peer does not read)", LIMITS, "BYTES", server=True, shown_default="1M"),
    S("keep_alive", ("--keep-alive",), seconds, 75.0, "close connections idle this long, with no request "
      "(above nginx's 60)", LIMITS, "S", server=True, gunicorn="keepalive"),
    S("read_timeout", ("--read-timeout",), seconds, 30.0, "drop a peer stalled inside a record this long",
      LIMITS, "S", server=True),
    S("body_timeout", ("--body-timeout",), seconds, 60.0, "answer 408 to a request whose body makes no "
      "progress this long (0: never)", LIMITS, "S", server=True),
    S("write_timeout", ("--write-timeout",), seconds, 60.0, "drop a peer that takes none of our output "
      "this long (0: never)", LIMITS, "S", server=True),
    S("request_timeout", ("--request-timeout",), seconds, 0.0, "answer 504 and interrupt a request running "
      "longer than this (0: off)", LIMITS, "S"),
    # -- process manager
    S("no_master", ("--no-master",), boolean, False, "serve in this one process, no master (for embedding "
      "and debugging); implies one worker", PROCESS, action="flag", reload="restart"),
    S("timeout", ("--timeout",), seconds, 30.0, "kill and replace a worker whose loop sent no heartbeat "
      "this long (not a request time limit: see --request-timeout)", PROCESS, "S"),
    S("graceful_timeout", ("--graceful-timeout",), seconds, 30.0, "how long stopping may wait for running "
      "requests", PROCESS, "S", server=True, gunicorn="graceful_timeout"),
    S("max_requests", ("--max-requests",), count, 0, "recycle a worker after N requests (0: never)",
      PROCESS, "N"),
    S("max_requests_jitter", ("--max-requests-jitter",), count, 0, "add 0..N at random to --max-requests "
      "per worker", PROCESS, "N"),
    S("restart_threshold", ("--restart-threshold",), positive, 10, "crash loop guard: after N worker deaths "
      "within --restart-window, back off before starting more", PROCESS, "N"),
    S("restart_window", ("--restart-window",), seconds, 60.0, "see --restart-threshold", PROCESS, "S"),
    S("pm", ("--pm",), choice("static", "dynamic", "ondemand"), "static", "the pool: static (--workers "
      "always), dynamic (--min-spare-workers to --max-spare-workers idle ones, at most --workers) or "
      "ondemand (none at rest, started as connections wait), as php-fpm's pm", PROCESS, "MODE",
      reload="restart"),
    S("start_workers", ("--start-workers",), count, None, "--pm dynamic: workers started at boot",
      PROCESS, "N", shown_default="min + (max - min) / 2 spare", reload="restart"),
    S("min_spare_workers", ("--min-spare-workers",), count, 1, "--pm dynamic: start workers while fewer "
      "are idle (no request running)", PROCESS, "N", reload="restart"),
    S("max_spare_workers", ("--max-spare-workers",), count, 3, "--pm dynamic: stop idle workers beyond "
      "this many", PROCESS, "N", reload="restart"),
    S("worker_idle_timeout", ("--worker-idle-timeout",), seconds, 10.0, "--pm ondemand: stop a worker "
      "idle this long", PROCESS, "S"),
    S("max_worker_memory", ("--max-worker-memory",), size, 0, "a worker whose resident memory passes "
      "this finishes its requests and is replaced (0: no limit)", PROCESS, "SIZE"),
    S("preload", ("--preload",), boolean, False, "import the app in the master before forking, so the "
      "workers share its memory (HUP then re-forks without reloading code: use USR2)", PROCESS,
      action="flag", reload="restart"),
    S("pid", ("--pid",), string, None, "write the master's pid to FILE", PROCESS, "FILE", reload="restart"),
    S("user", ("--user",), string, None, "run the workers as USER (name or uid), dropped to after binding "
      "and before loading the app; needs root", PROCESS, "USER", reload="restart"),
    S("group", ("--group",), string, None, "run the workers with GROUP (default: USER's primary group)",
      PROCESS, "GROUP", reload="restart"),
    S("umask", ("--umask",), octal, None, "umask of the master and the workers, octal (default: inherited)",
      PROCESS, "MODE", reload="restart"),
    # -- observing
    S("status_path", ("--status-path",), string, None, "serve the pool status page at PATH", OBSERVING, "PATH"),
    S("ping_path", ("--ping-path",), string, None, "answer 'pong' at PATH", OBSERVING, "PATH"),
    S("pool_name", ("--pool-name",), string, None, "pool name on the status page (default MODULE:APP)",
      OBSERVING, "NAME"),
    S("status_show_query", ("--status-show-query",), boolean, False, "show the query string of running "
      "requests on the status page (it may carry other users' tokens)", OBSERVING, action="flag"),
    S("slow_request_timeout", ("--slow-request-timeout",), seconds, 0.0, "log the Python stack of a request "
      "still running after S seconds (0: off)", OBSERVING, "S"),
    S("access_log", ("--access-log",), string, None, "access log file, - for stderr", OBSERVING, "FILE",
      reload="restart"),
    S("access_log_format", ("--access-log-format",), string, None, "access log line: json (one JSON object "
      "per line), or a format over the atoms of docs/observability.md, {atom} or gunicorn style",
      OBSERVING, "FORMAT", reload="restart"),
    S("error_log", ("--error-log",), string, "-", "error log file, - for stderr", OBSERVING, "FILE",
      reload="restart"),
    S("log_level", ("--log-level",), choice("debug", "info", "warning", "error", "critical"), "info",
      "log level", OBSERVING, "LEVEL", reload="restart"),
    S("error_log_format", ("--error-log-format",), choice("text", "json"), "text", "error log lines: text, "
      "or json (one JSON object per line)", OBSERVING, "FORMAT", reload="restart"),
    S("log_config", ("--log-config",), string, None, "configure logging from FILE (logging.config.dictConfig; "
      "JSON, or TOML when FILE ends in .toml), after --error-log and --log-level", OBSERVING, "FILE",
      reload="restart"),
    S("capture_output", ("--capture-output",), boolean, False, "send the workers' stdout and stderr (print(), "
      "C extensions) to the error log, one record per line", OBSERVING, action="flag"),
)
del S

BY_NAME: dict = {setting.name: setting for setting in SETTINGS}


class Settings:
    """The effective settings: one attribute per declared setting, plus `app`.

    `sources[name]` says where each value came from: "default",
    "config file", "environment" or "command line".
    """

    def __init__(self, values: Mapping[str, Any] | None = None, sources: Mapping[str, str] | None = None,
                 app: str | None = None, config_file: str | None = None) -> None:
        for setting in SETTINGS:
            default = setting.default
            setattr(self, setting.name, list(default) if isinstance(default, list) else default)
        self.sources = {setting.name: "default" for setting in SETTINGS}
        self.app = app
        self.config_file = config_file
        #: what `load` read them from (the command line, the environment at
        #: start), for `reread` at HUP; None when made another way
        self.argv: list | None = None
        self.environ: dict | None = None
        for name, value in (values or {}).items():
            if name not in BY_NAME:
                raise SettingError("unknown setting %r" % name)
            setattr(self, name, value)
        self.sources.update(sources or {})

    def server_options(self) -> dict:
        """Keyword arguments of `server.Server`."""
        options = {s.name: getattr(self, s.name) for s in SETTINGS if s.server}
        options["multiprocess"] = self.workers > 1
        return options

    def as_dict(self) -> dict:
        return {s.name: getattr(self, s.name) for s in SETTINGS}

    def describe(self) -> str:
        """`--print-config`: every effective value and where it came from."""
        lines = ["app = %r" % self.app]
        for setting in SETTINGS:
            lines.append("%s = %r  # %s" % (setting.name, getattr(self, setting.name),
                                            self.sources[setting.name]))
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return "Settings(%s)" % ", ".join("%s=%r" % item for item in self.as_dict().items())


def server_defaults() -> dict:
    return dict({s.name: s.default for s in SETTINGS if s.server}, multiprocess=False)


def gunicorn_server_options(cfg: Any) -> dict:
    """`Server` keyword arguments from a gunicorn config: each setting that
    names its gunicorn counterpart (`gunicorn="..."`) takes that value."""
    options = {}
    for setting in SETTINGS:
        if setting.server and setting.gunicorn and setting.name != "backlog":  # gunicorn binds itself
            value = getattr(cfg, setting.gunicorn)
            if setting.name == "keep_alive" and not value:
                # gunicorn's --keep-alive 0 means "no idle connections": close them at
                # the next tick (a FastCGI server cannot refuse FCGI_KEEP_CONN).
                value = 0.001
            options[setting.name] = setting.parse(value)
    return options


def check_server_options(options: Mapping[str, Any]) -> dict:
    """`Server(**options)`: unknown names are refused, values parsed and checked."""
    checked = {}
    for name, value in options.items():
        if name == "multiprocess":
            checked[name] = bool(value)
            continue
        setting = BY_NAME.get(name)
        if setting is None or not setting.server:
            raise TypeError("Server() got an unexpected keyword argument %r" % name)
        checked[name] = value if value is None else setting.parse(value)
    return checked


# -- command line -------------------------------------------------------------------

class _ParseAction(argparse.Action):
    """Parses the value with the setting's type, so errors read the same everywhere."""

    def __call__(self, parser, namespace, values, option_string=None):
        setting = BY_NAME[self.dest]
        try:
            value = setting.parse(values)
        except SettingError as exc:
            parser.error("argument %s: %s" % (option_string, exc))
        if setting.action == "append":
            current = getattr(namespace, self.dest, None) or []
            value = current + [value]
        setattr(namespace, self.dest, value)


def build_parser(version: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsgi-fcgi", description="Serve a WSGI application over FastCGI.",
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("app", metavar="MODULE:APP", nargs="?",
                        help="the WSGI app: pkg.mod:app, pkg.mod, or pkg.mod:create_app()")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="read settings from a TOML file (the command line wins over it)")
    parser.add_argument("--check-config", action="store_true",
                        help="check the settings and load the app, then exit 0 (ok) or 1")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective settings and where each came from, then exit")
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for setting in SETTINGS:
        help_text = setting.help + " (default %s)" % setting.default_text()
        group = groups[setting.group]
        if setting.action == "flag":
            group.add_argument(*setting.flags, dest=setting.name, action="store_const", const=True,
                               help=help_text)
        else:
            choices = getattr(setting.parse, "choices", None)
            group.add_argument(*setting.flags, dest=setting.name, action=_ParseAction, metavar=setting.metavar,
                               choices=choices, help=help_text)
    if version:
        parser.add_argument("--version", action="version", version="wsgi-fcgi " + version)
    return parser


# -- config file and environment -------------------------------------------------------

def read_config_file(path: str) -> dict:
    """A TOML file of `name = value` (dashes or underscores), or a `[wsgi_fcgi]` table."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise SettingError("--config needs Python 3.11 (tomllib) or the tomli package") from None
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingError("cannot read --config %s: %s" % (path, exc.strerror or exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingError("--config %s: %s" % (path, exc)) from None
    if isinstance(data.get("wsgi_fcgi"), dict):
        data = data["wsgi_fcgi"]
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "app":
            values["app"] = string(value)
            continue
        setting = BY_NAME.get(name)
        if setting is None:
            raise SettingError("--config %s: unknown setting %r" % (path, key))
        values[name] = _parse_for(setting, value, "--config %s: %s" % (path, key))
    return values


def read_environment(environ: Mapping[str, str]) -> dict:
    values = {}
    for setting in SETTINGS:
        text = environ.get(setting.env_name)
        if text is not None:
            values[setting.name] = _parse_for(setting, text, setting.env_name)
    if environ.get(ENV_PREFIX + "APP"):
        values["app"] = environ[ENV_PREFIX + "APP"]
    return values


def _parse_for(setting: Setting, value: Any, where: str) -> Any:
    try:
        if setting.action == "append":
            return [setting.parse(item) for item in string_list(value)]
        return setting.parse(value)
    except SettingError as exc:
        raise SettingError("%s: %s" % (where, exc)) from None


class Invocation:
    """What the command line asked for besides settings."""

    def __init__(self, settings: Settings, check: bool = False, print_config: bool = False) -> None:
        self.settings = settings
        self.check = check
        self.print_config = print_config


def load(argv: Iterable[str] | None = None, environ: Mapping[str, str] | None = None,
         version: str = "", config_file: str | None = None) -> Invocation:
    """Settings from the command line, the environment and the config file.

    Raises SettingError (bad file, bad environment value); argparse itself
    exits with status 2 on a bad command line, as usual.  `config_file`
    (absolute) replaces the one named by the command line or environment.
    """
    parser = build_parser(version)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(parser.parse_args(argv))
    environ = dict(os.environ if environ is None else environ)
    config_file = config_file or args.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG") or None
    args.pop("config", None)
    if config_file:
        config_file = os.path.abspath(config_file)  # read again at HUP, after --chdir
    check = args.pop("check_config", False)
    print_config = args.pop("print_config", False)
    layers = []
    if config_file:
        layers.append(("config file", read_config_file(config_file)))
    layers.append(("environment", read_environment(environ)))
    layers.append(("command line", {k: v for k, v in args.items() if v is not None}))
    values: dict = {}
    sources: dict = {}
    for source, layer in layers:
        for name, value in layer.items():
            values[name] = value
            sources[name] = source
    app = values.pop("app", None)
    sources.pop("app", None)
    if not app:
        parser.error("the following arguments are required: MODULE:APP")
    settings = Settings(values, sources, app=app, config_file=config_file)
    settings.argv, settings.environ = argv, environ
    return Invocation(settings, check=check, print_config=print_config)


def reread(current: Settings) -> tuple:
    """HUP: the settings again, from the same command line and the
    environment as it was at start, and the config file as it is now.

    Returns (settings, changes): `changes` are log lines, one per changed
    setting; a change to a `reload="restart"` setting is reported and not
    applied (the new settings keep the current value).  Raises SettingError
    (a broken file): the caller keeps `current`."""
    new = load(current.argv, current.environ, config_file=current.config_file).settings
    changes = []
    for setting in SETTINGS:
        old_value, new_value = getattr(current, setting.name), getattr(new, setting.name)
        if old_value == new_value:
            continue
        if setting.reload == "restart":
            changes.append("%s changed to %r: needs a restart, keeping %r" % (setting.name, new_value, old_value))
            setattr(new, setting.name, old_value)
            new.sources[setting.name] = current.sources[setting.name]
        else:
            changes.append("%s changed from %r to %r" % (setting.name, old_value, new_value))
    if new.app != current.app:
        changes.append("app changed from %r to %r" % (current.app, new.app))
    return new, changes


# -- documentation -----------------------------------------------------------------

def markdown_table(group: str) -> str:
    """The README table of one group's options: option, default, meaning."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        if setting.group != group:
            continue
        flag = setting.flag + ("" if setting.action == "flag" else " " + (setting.metavar or "VALUE"))
        rows.append("| `%s` | `%s` | %s |" % (flag, setting.default_text(), setting.help))
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m wsgi_fcgi.settings: the README tables
    for name in GROUPS:
        print("### %s\n\n%s" % (name[0].upper() + name[1:], markdown_table(name)))
