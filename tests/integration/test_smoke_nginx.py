import requests
from support import fastcgi_location


def test_get_through_nginx(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("envapp:app")
    nginx = start_nginx(fastcgi_location(server.address))
    r = requests.get(nginx.url + "/caf%C3%A9/x?a=1&a=2", timeout=10)
    assert r.status_code == 200
    env = r.json()["environ"]
    assert env["PATH_INFO"] == "/café/x".encode().decode("latin-1")
    assert env["SCRIPT_NAME"] == ""
    assert env["QUERY_STRING"] == "a=1&a=2"
