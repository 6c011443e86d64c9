"""The Django example (examples/django_app) through nginx with its shipped
nginx.conf: routing, path converters, build_absolute_uri(), is_secure()
behind TLS, a CSRF-protected POST, and static files served by nginx."""

import re
import subprocess

import pytest
import requests
from support import PYTHON, ROOT, Nginx, WsgiFcgi, free_port, project_env, shipped_nginx_conf

DJANGO_APP = ROOT / "examples" / "django_app"
SHIPPED_STATIC = "alias /srv/django_app/static/;"
SHIPPED_LISTEN = "listen 127.0.0.1:%d;"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("django")
    env = {"DJANGO_STATIC_ROOT": str(tmp / "static"), "DJANGO_SETTINGS_MODULE": "djapp.settings"}
    subprocess.run([PYTHON, "manage.py", "collectstatic", "--noinput"], cwd=DJANGO_APP, env=project_env(env),
                   check=True, capture_output=True, timeout=60)
    backend = WsgiFcgi("djapp.wsgi:application", tmp, cwd=DJANGO_APP, env=env)
    port, tls_port = free_port(), free_port()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", tmp / "key.pem", "-out", tmp / "cert.pem"],
                   check=True, capture_output=True, timeout=60)
    conf = shipped_nginx_conf("../examples/django_app/nginx.conf", port, [backend.address])
    conf = conf.replace(SHIPPED_STATIC, "alias %s/;" % (tmp / "static"))
    conf = conf.replace(SHIPPED_LISTEN % port, SHIPPED_LISTEN % port + """
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;""" % (tls_port, tmp / "cert.pem", tmp / "key.pem"))
    nginx = Nginx(tmp, None, conf, port=port)
    nginx.tls_url = "https://127.0.0.1:%d" % tls_port
    yield nginx
    nginx.stop()
    backend.stop()


def test_routing_and_absolute_uri(site):
    about = requests.get(site.url + "/about/?x=1", timeout=10).json()
    assert about["path"] == about["path_info"] == "/about/"
    assert about["script_name"] == ""
    # the shipped config puts the browser's port back into HTTP_HOST
    assert about["absolute_uri"] == "http://127.0.0.1:%d/about/?x=1" % site.port
    assert about["is_secure"] is False
    assert about["article_url"] == "/articles/2024/hello/"


def test_common_middleware_redirects_to_the_slash(site):
    response = requests.get(site.url + "/about", timeout=10, allow_redirects=False)
    assert response.status_code == 301 and response.headers["Location"] == "/about/"


def test_path_converters(site):
    result = requests.get(site.url + "/articles/2024/hello-world/", timeout=10).json()
    assert result == {"year": 2024, "year_type": "int", "slug": "hello-world"}
    assert requests.get(site.url + "/articles/twenty/hello/", timeout=10).status_code == 404


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # our self-signed test certificate
def test_is_secure_behind_tls(site):
    about = requests.get(site.tls_url + "/about/", timeout=10, verify=False).json()
    assert about["is_secure"] is True
    assert about["absolute_uri"] == "https://127.0.0.1:%s/about/" % site.tls_url.rpartition(":")[2]


def test_csrf_protected_post(site):
    with requests.Session() as session:
        page = session.get(site.url + "/greet/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        assert "csrftoken" in session.cookies
        # as a browser posts it: with its Origin, which Django >= 4 compares with the host
        ok = session.post(site.url + "/greet/", data={"csrfmiddlewaretoken": token, "name": "Ada"},
                          headers={"Origin": site.url}, timeout=10)
        assert (ok.status_code, ok.text) == (200, "Hello, Ada!")
    refused = requests.post(site.url + "/greet/", data={"name": "Mallory"}, timeout=10)
    assert refused.status_code == 403


def test_static_files_served_by_nginx(site):
    page = requests.get(site.url + "/greet/", timeout=10).text
    href = re.search(r'href="(/static/[^"]+)"', page).group(1)
    response = requests.get(site.url + href, timeout=10)
    assert response.status_code == 200 and "served by nginx" in response.text
    assert response.headers["Server"].startswith("nginx") and "Expires" in response.headers
    assert requests.get(site.url + "/static/missing.css", timeout=10).status_code == 404
