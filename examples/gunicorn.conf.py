# gunicorn configuration for serving a WSGI app over FastCGI:
#
#     gunicorn -c examples/gunicorn.conf.py myapp:app
#
# with nginx in front:
#
#     upstream app { server 127.0.0.1:9000; keepalive 16; }
#     location / { include fastcgi_params; fastcgi_pass app; fastcgi_keep_conn on; }

worker_class = "wsgi_fcgi.gunicorn_worker.FastCGIWorker"
bind = ["127.0.0.1:9000"]          # or "unix:/run/wsgi-fcgi/app.sock"
workers = 2                        # processes, each with its own selector loop
threads = 8                        # request threads per worker
worker_connections = 1000          # FastCGI connections per worker
keepalive = 75                     # seconds an idle (FCGI_KEEP_CONN) connection stays open
timeout = 30                       # the master replaces a worker silent for this long
graceful_timeout = 30              # TERM/HUP: running requests get this long to finish
max_requests = 10000               # recycle a worker after this many requests...
max_requests_jitter = 1000         # ...plus up to this many, so workers do not restart together

accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss "%({user-agent}i)s" %({content-type}o)s'


def pre_request(worker, req):
    # req: method, uri, path, query, headers [(NAME, value)], remote_addr, fcgi_request
    worker.log.debug("%s %s", req.method, req.uri)


def post_request(worker, req, environ, resp):
    # resp: status, status_code, headers, sent (body bytes)
    if resp.status_code >= 500:
        worker.log.warning("%s %s answered %s", req.method, req.uri, resp.status)
