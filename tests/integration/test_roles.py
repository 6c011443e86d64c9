"""AUTHORIZER and FILTER roles (spec 6.3, 6.4) against a real server process."""

import pytest
from support import FcgiConnection

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from support import WsgiFcgi
    proc = WsgiFcgi("protoapp:app", tmp_path_factory.mktemp("roles"), "--threads", "2")
    yield proc
    proc.stop()


def test_authorizer_allows_with_variables(server):
    response = client.request(server.address, "GET", "/authorize", role=p.AUTHORIZER,
                              headers=[("Authorization", "Bearer good")])
    assert response.status == 200
    assert response.header("Variable-REMOTE_USER") == "alice"
    assert response.header("Variable-ROLE") == "admin"
    assert response.body == b""
    assert response.protocol_status == p.REQUEST_COMPLETE


def test_authorizer_denies_with_its_own_answer(server):
    response = client.request(server.address, "GET", "/authorize", role=p.AUTHORIZER,
                              headers=[("Authorization", "Bearer bad")])
    assert response.status == 403
    assert response.body == b"go away"
    assert response.header("Variable-REMOTE_USER") is None


def test_authorizer_tolerates_an_empty_stdin(server):
    with FcgiConnection(server.address) as conn:
        params = client.cgi_params("GET", "/authorize", headers=[("Authorization", "Bearer good")])
        conn.send(p.encode_begin_request(1, p.AUTHORIZER, p.KEEP_CONN) + p.encode_params(1, params)
                  + p.encode_record(p.STDIN, 1))
        assert conn.wait_ended(1)[1].status == 200
        conn.records.clear()
        conn.send_request(2, "/responder-after")
        assert conn.wait_ended(2)[2].body == b"ok /responder-after"


def test_filter_reads_stdin_and_data(server):
    response = client.request(server.address, "POST", "/filter", body=b"the stdin", role=p.FILTER,
                              data=b"the file data")
    assert (response.status, response.body) == (200, b"the stdin|THE FILE DATA")


def test_filter_with_large_data_in_many_records(server):
    data = bytes(range(97, 123)) * 20000  # 520 000 bytes, 8 records
    response = client.request(server.address, "POST", "/filter", body=b"", role=p.FILTER, data=data)
    assert response.body == b"|" + data.upper()


def test_filter_and_responder_multiplexed(server):
    with FcgiConnection(server.address) as conn:
        conn.send_request(1, "/filter", b"in", method="POST", role=p.FILTER, data=b"abc")
        conn.send_request(2, "/plain")
        responses = conn.wait_ended(1, 2)
        assert responses[1].body == b"in|ABC" and responses[2].body == b"ok /plain"


def test_every_role_is_in_the_environ_as_fcgi_role(start_wsgi_fcgi):
    # Web servers rarely send FCGI_ROLE; the server adds it, as libfcgi does.
    import json
    envserver = start_wsgi_fcgi("envapp:app")
    assert json.loads(client.request(envserver.address, "GET", "/").body)["environ"]["FCGI_ROLE"] == "RESPONDER"
    sent = client.request(envserver.address, "GET", "/", extra_params=[("FCGI_ROLE", "FROM-SERVER")])
    assert json.loads(sent.body)["environ"]["FCGI_ROLE"] == "FROM-SERVER"


def test_lighttpd_authorizer_in_front_of_static_files(server, tmp_path):
    """lighttpd's `"mode" => "authorizer"`: our 200 lets it serve the file, our
    403 (with its body) goes to the client instead."""
    import requests

    from frontends import Lighttpd
    host, port = server.address.rsplit(":", 1)
    root = tmp_path / "lighttpd"
    site = """
server.modules += ("mod_fastcgi")
fastcgi.server = ("/protected/" => (("host" => "%s", "port" => %s, "check-local" => "disable",
                                     "mode" => "authorizer", "docroot" => "%s/htdocs")))
""" % (host, port, root)
    lighttpd = Lighttpd(root, site)
    try:
        (root / "htdocs" / "protected").mkdir()
        (root / "htdocs" / "protected" / "secret.txt").write_text("the secret\n")
        allowed = requests.get(lighttpd.url + "/protected/secret.txt",
                               headers={"Authorization": "Bearer good"}, timeout=10)
        assert (allowed.status_code, allowed.text) == (200, "the secret\n")
        denied = requests.get(lighttpd.url + "/protected/secret.txt",
                              headers={"Authorization": "Bearer bad"}, timeout=10)
        assert (denied.status_code, denied.text) == (403, "go away")
    finally:
        lighttpd.stop()
