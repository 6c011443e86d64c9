"""nginx configs as people copy them, through a real nginx: Flask's own
FastCGI docs recipe (SCRIPT_NAME set again after `include fastcgi_params`),
url_for(_external=True) on a non-default port and a Django CSRF form POST
with a browser's Origin header behind the shipped configs, which put the
browser's port back into HTTP_HOST after Debian's `HTTP_HOST $host`.

These need the param semantics of php-fpm: a CGI variable sent twice keeps
its last value, HTTP_HOST too."""

import re

import pytest
import requests
from support import ROOT, free_port, shipped_nginx_conf

FLASK_APP = ROOT / "examples" / "flask_app"
DJANGO_APP = ROOT / "examples" / "django_app"

#: https://flask.palletsprojects.com/en/stable/deploying/ (FastCGI with nginx), as written
#: there, but for the backend address and a root for try_files.
FLASK_DOCS_RECIPE = """
    root {tmp};
    location = /yourapplication {{ rewrite ^ /yourapplication/ last; }}
    location /yourapplication {{ try_files $uri @yourapplication; }}
    location @yourapplication {{
        include fastcgi_params;
        fastcgi_split_path_info ^(/yourapplication)(.*)$;
        fastcgi_param PATH_INFO $fastcgi_path_info;
        fastcgi_param SCRIPT_NAME $fastcgi_script_name;
        fastcgi_pass {backend};
    }}
"""


def test_flask_docs_recipe_links_under_the_prefix(start_wsgi_fcgi, start_nginx, tmp_path):
    backend = start_wsgi_fcgi("app:app", "--chdir", str(FLASK_APP))
    nginx = start_nginx(FLASK_DOCS_RECIPE.format(tmp=tmp_path, backend=backend.address))
    page = requests.get(nginx.url + "/yourapplication/", timeout=10)
    assert page.status_code == 200, page.text
    assert "Mounted at <code>/yourapplication</code>" in page.text
    links = re.findall(r'href="([^"]+)"', page.text)
    assert links and all(link.startswith("/yourapplication/") for link in links), links
    for link in links:
        with requests.get(nginx.url + link.replace("&amp;", "&"), stream=True, timeout=10) as r:
            assert r.status_code == 200, link
    hello = requests.get(nginx.url + "/yourapplication/hello/x", timeout=10).json()
    assert hello["external_url"] == "http://127.0.0.1/yourapplication/hello/x"  # Debian's $host: no port


def test_url_for_external_keeps_a_non_default_port(start_site):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "app:app", "--chdir", str(FLASK_APP))
    hello = requests.get(url + "/hello/caf%C3%A9", timeout=10).json()
    assert hello["external_url"] == url + "/hello/caf%C3%A9"
    under_prefix, _ = start_site("wsgi-fcgi-prefix.conf", "app:app", "--chdir", str(FLASK_APP),
                                 "--script-name", "/app")
    assert requests.get(under_prefix + "/app/hello/x", timeout=10).json()["external_url"] == under_prefix + "/app/hello/x"


HOSTS = [
    ("127.0.0.1:{port}", "127.0.0.1:{port}"),
    ("Example.ORG:8443", "example.org:8443"),   # nginx's $host: lower case, the port kept
    ("example.org", "example.org"),              # no port: none added
    ("[::1]:8080", "[::1]:8080"),
]


def test_http_host_is_nginx_host_with_the_browsers_port(start_site):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    port = int(url.rpartition(":")[2])
    for host, expected in HOSTS:
        environ = raw_get_environ(port, "/env", host.format(port=port))
        assert environ["HTTP_HOST"] == expected.format(port=port), host
    assert environ["SERVER_SOFTWARE"].startswith("nginx/")  # RFC 3875 4.1.17: the web server's name
    # Why Debian sends $host and not $http_host: with an absolute-form target
    # and a forged Host header, the host name stays nginx's.
    environ = raw_get_environ(port, "http://good.example/env", "forged.example")
    assert environ["HTTP_HOST"] == "good.example"


def raw_get_environ(port: int, target: str, host: str) -> dict:
    """GET `target` (a path, or an absolute URL) with exactly this Host header;
    the environ envapp saw."""
    import http.client
    import json
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 200, body[:300]
    return json.loads(body)["environ"]


@pytest.fixture
def django_site(start_wsgi_fcgi, start_nginx, tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "djapp.settings", "DJANGO_STATIC_ROOT": str(tmp_path / "static")}
    backend = start_wsgi_fcgi("djapp.wsgi:application", cwd=DJANGO_APP, env=env)
    port = free_port()
    start_nginx(None, shipped_nginx_conf("wsgi-fcgi-tcp.conf", port, [backend.address]), port=port)
    return "http://127.0.0.1:%d" % port


def test_django_csrf_form_post_with_a_browsers_origin(django_site):
    """Django >= 4 compares the Origin a browser sends with the host it sees:
    without the port, every form POST on a port other than 80/443 gets 403."""
    with requests.Session() as browser:
        page = browser.get(django_site + "/greet/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        ok = browser.post(django_site + "/greet/", data={"csrfmiddlewaretoken": token, "name": "Ada"},
                          headers={"Origin": django_site, "Referer": django_site + "/greet/"}, timeout=10)
        assert (ok.status_code, ok.text) == (200, "Hello, Ada!")
        forged = browser.post(django_site + "/greet/", data={"csrfmiddlewaretoken": token, "name": "Eve"},
                              headers={"Origin": "http://evil.example"}, timeout=10)
        assert forged.status_code == 403
    about = requests.get(django_site + "/about/", timeout=10).json()
    assert about["absolute_uri"] == django_site + "/about/"
