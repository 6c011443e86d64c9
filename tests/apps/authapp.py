"""Test app for the FastCGI AUTHORIZER role (spec 6.3).

Authorization: Bearer good       200, with Variable-User / Variable-Role
Authorization: Bearer forbidden  403
anything else                    401 with WWW-Authenticate
"""


def app(environ, start_response):
    token = environ.get("HTTP_AUTHORIZATION", "")
    if token == "Bearer good":
        start_response("200 OK", [("Variable-User", "alice"), ("Variable-Role", "admin"),
                                  ("Variable-Checked-Uri", environ.get("REQUEST_URI", "")),
                                  ("Variable-Fcgi-Role-Seen", environ.get("FCGI_ROLE", ""))])
        return [b""]
    if token == "Bearer forbidden":
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"forbidden by the authorizer\n"]
    start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                        ("WWW-Authenticate", 'Bearer realm="test"')])
    return [b"who are you?\n"]


application = app
