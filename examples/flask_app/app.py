"""A small but real Flask app to run behind nginx with wsgi_fcgi.

    python -m wsgi_fcgi --chdir examples/flask_app --bind 127.0.0.1:9000 app:app

Pages with url_for links, a form (POST, then redirect), a JSON API (in
memory), a file upload (answers its size and sha256) and a streamed response.
"""

import hashlib
import itertools
import threading
import time

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, stream_with_context, url_for

app = Flask(__name__)

# In-memory state: fine for an example, shared by the request threads of one process.
_lock = threading.Lock()
_messages: list = []
_items: dict = {}
_item_ids = itertools.count(1)


@app.get("/")
def index():
    return render_template("index.html", title="wsgi_fcgi + Flask")


@app.get("/hello/<path:name>")
def hello(name):
    """Any name, percent-encoded UTF-8 included: /hello/caf%C3%A9."""
    return jsonify(name=name, url=url_for("hello", name=name),
                   external_url=url_for("hello", name=name, _external=True),
                   script_root=request.script_root, path=request.path,
                   args={key: request.args.getlist(key) for key in request.args})


@app.route("/guestbook", methods=["GET", "POST"])
def guestbook():
    if request.method == "POST":
        text = request.form.get("message", "").strip()
        if text:
            with _lock:
                _messages.append({"author": request.form.get("author", "").strip() or "anonymous",
                                  "message": text})
        # Post/Redirect/Get: a reload of the result page does not post again.
        return redirect(url_for("guestbook"), code=303)
    with _lock:
        messages = list(_messages)
    return render_template("guestbook.html", title="Guestbook", messages=messages)


@app.get("/api/items")
def list_items():
    with _lock:
        return jsonify(items=list(_items.values()))


@app.post("/api/items")
def create_item():
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return jsonify(error='send a JSON object with a "name" string'), 400
    with _lock:
        item = {"id": next(_item_ids), "name": data["name"], "tags": data.get("tags", [])}
        _items[item["id"]] = item
    response = jsonify(item)
    response.status_code = 201
    response.headers["Location"] = url_for("get_item", item_id=item["id"])
    return response


@app.get("/api/items/<int:item_id>")
def get_item(item_id):
    with _lock:
        item = _items.get(item_id)
    if item is None:
        abort(404)
    return jsonify(item)


@app.route("/upload", methods=["GET", "POST"])
def upload():
    if request.method == "GET":
        return render_template("upload.html", title="Upload")
    upload = request.files.get("file")
    if upload is None:
        return jsonify(error="no file in the form field 'file'"), 400
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: upload.stream.read(65536), b""):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(filename=upload.filename, size=size, sha256=digest.hexdigest())


@app.get("/stream")
def stream():
    """Lines sent as they are produced (each one its own chunk)."""
    count = min(request.args.get("lines", 10, type=int), 100000)
    delay = min(request.args.get("delay", 0.0, type=float), 1.0)

    @stream_with_context
    def generate():
        # stream_with_context keeps `request` usable inside the generator.
        for number in range(1, count + 1):
            if delay:
                time.sleep(delay)
            yield "line %d of %d for %s\n" % (number, count, request.remote_addr)

    return Response(generate(), mimetype="text/plain")


if __name__ == "__main__":
    from wsgi_fcgi import serve
    serve(app, bind="127.0.0.1:9000")
