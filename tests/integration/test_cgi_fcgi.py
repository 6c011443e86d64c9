"""cgi-fcgi (libfcgi-bin, the reference C library's CGI bridge) as an
independent FastCGI client: it sends its CGI environment as FCGI_PARAMS and
its stdin as FCGI_STDIN, and prints the CGI response."""

import hashlib
import json
import shutil
import subprocess

import pytest

CGI_FCGI = shutil.which("cgi-fcgi")
pytestmark = pytest.mark.skipif(CGI_FCGI is None, reason="cgi-fcgi (libfcgi-bin) is not installed")


def cgi_fcgi(connect, env, body=b""):
    """Run `cgi-fcgi -bind -connect`; returns (status line, headers dict, body)."""
    done = subprocess.run([CGI_FCGI, "-bind", "-connect", connect], input=body, env=env,
                          capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    head, _, payload = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, payload


def cgi_env(**extra):
    env = {"GATEWAY_INTERFACE": "CGI/1.1", "SERVER_NAME": "localhost", "SERVER_PORT": "8080",
           "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET"}
    env.update(extra)
    return env


def test_post_with_body_over_tcp(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app")
    body = b"name=caf%C3%A9&x=" + b"z" * 100000
    status, headers, payload = cgi_fcgi(server.address, cgi_env(
        REQUEST_METHOD="POST", SCRIPT_NAME="/app", PATH_INFO="/form/x", QUERY_STRING="a=1&a=2",
        CONTENT_LENGTH=str(len(body)), CONTENT_TYPE="application/x-www-form-urlencoded",
        HTTP_X_CUSTOM="yes"), body)
    assert status == "Status: 200 OK"
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(payload)
    env = answer["environ"]
    assert (env["REQUEST_METHOD"], env["SCRIPT_NAME"], env["PATH_INFO"]) == ("POST", "/app", "/form/x")
    assert env["QUERY_STRING"] == "a=1&a=2"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["HTTP_X_CUSTOM"] == "yes"
    assert env["SERVER_PORT"] == "8080"
    assert answer["body_length"] == len(body)
    assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_get_over_a_unix_socket(start_wsgi_fcgi, tmp_path):
    path = tmp_path / "app.sock"
    server = start_wsgi_fcgi("envapp:app", address="unix:%s" % path)
    status, _, payload = cgi_fcgi(str(path), cgi_env(SCRIPT_NAME="", PATH_INFO="/hello", QUERY_STRING=""))
    assert status == "Status: 200 OK"
    env = json.loads(payload)["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/hello")
    assert server.proc.poll() is None


def test_error_status_and_multiple_cookies(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app")
    status, _, payload = cgi_fcgi(server.address, cgi_env(SCRIPT_NAME="", PATH_INFO="/raise"))
    assert status == "Status: 500 Internal Server Error"
    assert b"secret-token" not in payload and b"Traceback" not in payload
    done = subprocess.run([CGI_FCGI, "-bind", "-connect", server.address], capture_output=True, timeout=20,
                          env=cgi_env(SCRIPT_NAME="", PATH_INFO="/cookies"))
    assert done.stdout.count(b"Set-Cookie: ") == 3
