"""The package as a stranger gets it: build the sdist and the wheel from the
checkout, check them as the package index would (twine check --strict), install
the wheel into a fresh virtualenv and serve one request through it; and the
container recipe, as far as it can be checked without a container runtime."""

from __future__ import annotations

import email
import json
import re
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest
from support import ROOT, Nginx, Process, WsgiFcgi, free_port, wait_for

BUILD_SECONDS = 120

APP = '''
import wsgi_fcgi

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("served by %s" % wsgi_fcgi.__file__).encode()]
'''


def run(cmd, cwd=None, timeout=BUILD_SECONDS):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, "%s failed:\n%s\n%s" % (cmd, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the venv's setuptools builds it, no download during the test
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT])
    return out


def only(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_twine_check_strict_passes(dist):
    pytest.importorskip("twine")
    run([sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir())])


def test_wheel_has_license_types_and_only_user_extras(dist):
    wheel = only(dist, "*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(zf.read(metadata_name))
    assert "wsgi_fcgi/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert metadata["License-Expression"] == "MIT"
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert "gunicorn" in extras and not extras & {"dev", "bench", "test"}, extras
    classifiers = metadata.get_all("Classifier")
    for wanted in ("Programming Language :: Python :: 3.10", "Programming Language :: Python :: 3.13",
                   "Framework :: Flask", "Framework :: Django", "Operating System :: POSIX :: Linux",
                   "Topic :: Internet :: WWW/HTTP :: WSGI :: Server", "Typing :: Typed"):
        assert wanted in classifiers
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    assert all(url.startswith("https://github.com/wsgi-fcgi/wsgi_fcgi") for url in urls.values())


def test_sdist_carries_the_tests_and_the_license(dist):
    sdist = only(dist, "*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    for wanted in ("LICENSE", "README.md", "requirements-dev.txt", "wsgi_fcgi/py.typed", "tests/conftest.py",
                   "tests/support.py", "tests/integration/test_package.py", "tests/apps/envapp.py"):
        assert wanted in names, wanted
    assert not any("__pycache__" in name for name in names)


BACKEND_HOOKS = """
import json, sys
sys.modules["mypyc"] = sys.modules["mypyc.build"] = None  # as in pip's isolated build before it installs mypy
sys.path[:0] = ["scripts", "."]
import build_backend
print(json.dumps([build_backend.get_requires_for_build_wheel(), build_backend.get_requires_for_build_editable()]))
"""


@pytest.mark.parametrize("compile_core", ["1", ""])
def test_build_requirements_ask_for_mypy_only_when_compiling(compile_core):
    """With WSGI_FCGI_COMPILE=1 the backend asks for mypy without running
    setup.py, which would import mypyc before it is installed (an sdist
    built with build isolation failed so)."""
    result = subprocess.run([sys.executable, "-c", BACKEND_HOOKS], cwd=ROOT, capture_output=True, text=True,
                            timeout=BUILD_SECONDS, env={"PATH": "/usr/bin:/bin", "WSGI_FCGI_COMPILE": compile_core})
    assert result.returncode == 0, result.stderr
    wheel, editable = json.loads(result.stdout.splitlines()[-1])
    if compile_core:
        assert wheel == editable == ["mypy>=1.10"]
    else:
        assert not any(r.startswith("mypy") for r in wheel + editable), (wheel, editable)


def test_wheel_in_a_fresh_venv_serves_a_request(dist, tmp_path):
    wheel = only(dist, "*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    # the test venv's pip installs into the fresh one: no index, no dependency from the checkout
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps",
         "--no-index", "--no-cache-dir", "--quiet", wheel])
    app_dir = tmp_path / "site"
    app_dir.mkdir()
    (app_dir / "packaged_app.py").write_text(APP)
    address = "127.0.0.1:%d" % free_port()
    env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}  # no PYTHONPATH: the checkout is not importable
    server = Process([venv / "bin" / "wsgi-fcgi", "--bind", address, "--chdir", app_dir, "packaged_app:app"],
                     tmp_path / "server.log", cwd=app_dir, env=env)
    try:
        def answered():
            if server.proc.poll() is not None:
                raise AssertionError("wsgi-fcgi exited %s:\n%s" % (server.proc.returncode, server.log()))
            result = subprocess.run([venv / "bin" / "python", "-m", "wsgi_fcgi.client", "--connect", address,
                                     "--timeout", "5", "/"], cwd=app_dir, env=env, capture_output=True,
                                    text=True, timeout=30)
            return result.stdout if result.returncode == 0 else None
        body = wait_for(answered, timeout=60, interval=0.2, what="a response from the installed wheel")
    finally:
        server.stop()
    assert body.startswith("served by " + str(venv)), body
    assert "site-packages" in body


# -- the container recipe (deploy/container): docker is not run here, so check what can be checked without it

CONTAINER = ROOT / "deploy" / "container"


def dockerfile_instructions() -> list:
    """(INSTRUCTION, arguments) of deploy/container/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (CONTAINER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def test_container_recipe_copies_files_that_exist():
    copies = [args.split() for name, args in dockerfile_instructions() if name.upper() == "COPY"]
    assert copies, "no COPY in the Dockerfile"
    for args in copies:
        sources = [arg for arg in args[:-1] if not arg.startswith("--")]
        for source in sources:  # the build context is the repository root (compose.yaml)
            assert (ROOT / source).exists(), "Dockerfile: COPY %s: no such file in the build context" % source
    compose = (CONTAINER / "compose.yaml").read_text()
    assert "context: ../..\n" in compose and "dockerfile: deploy/container/Dockerfile\n" in compose
    for mounted in re.findall(r"^\s+- (\./[^:]+):", compose, re.M):
        assert (CONTAINER / mounted).exists(), mounted


def test_container_command_and_nginx_config_serve_the_app(tmp_path):
    """The image's CMD and the nginx config of compose.yaml, run here: the
    socket path and nginx's port are the only values replaced."""
    cmd = json.loads(next(args for name, args in dockerfile_instructions() if name.upper() == "CMD"))
    workdir = next(args for name, args in dockerfile_instructions() if name.upper() == "WORKDIR")
    assert cmd[0] == "wsgi-fcgi" and workdir == "/srv/app"
    args = cmd[1:]
    bind = args.index("--bind")
    assert args[bind + 1] == "unix:/run/wsgi-fcgi/app.sock"
    socket_path = str(tmp_path / "app.sock")
    del args[bind:bind + 2]  # WsgiFcgi passes --bind itself
    server = WsgiFcgi(args[-1], tmp_path, *args[:-1], address="unix:%s" % socket_path,
                      cwd=ROOT / "examples" / "flask_app", wait=False)
    try:
        server.wait_ready()
        port = free_port()
        conf = (CONTAINER / "nginx.conf").read_text()
        assert conf.count("listen 8080;") == 1 and "unix:/run/wsgi-fcgi/app.sock" in conf
        conf = conf.replace("listen 8080;", "listen 127.0.0.1:%d;" % port)
        nginx = Nginx(tmp_path, None, conf.replace("/run/wsgi-fcgi/app.sock", socket_path), port=port)
        try:
            with urllib.request.urlopen(nginx.url + "/", timeout=30) as response:
                assert response.status == 200 and b"<html" in response.read().lower()
            with urllib.request.urlopen(nginx.url + "/fcgi-ping", timeout=30) as response:
                assert response.read().strip() == b"pong"
        finally:
            nginx.stop()
    finally:
        server.stop()
