"""Test app for the soak test: envapp (echo with sha256, /raise, /sleep) plus
protoapp's /slow-stream, whose close() prints "closed <id>" to stderr."""

import envapp
import protoapp


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow-stream":
        return protoapp.app(environ, start_response)
    return envapp.app(environ, start_response)
