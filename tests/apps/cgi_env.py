#!/usr/bin/env python3
"""A CGI script (RFC 3875) that answers its environment as JSON: what a
handler behind a FastCGI authorizer sees (the Variable-* values)."""
import json
import os

body = json.dumps(dict(os.environ), sort_keys=True).encode()
print("Content-Type: application/json\r\nContent-Length: %d\r\n\r" % len(body), flush=True)
os.write(1, body)
