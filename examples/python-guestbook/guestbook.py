"""The guestbook as a WSGI application of your own, run by gunicorn behind
Bulwark's app role: a page at /, a JSON API at /api/messages, a health
check at /health. The database is Bulwark's (bulwarkdb.py) or, for the
comparison with the classic stack, MySQL/MariaDB primary + replica
(mysqldb.py): store.py picks one from the environment; the statements
below are the same on both.

Posts with an `Idempotency-Key` header are stored at most once however often
they are sent (the key becomes the write's request id), so the proxies in
front may replay them when an app server dies. A poster's next read waits
for their write (the token of the write in a signed cookie; on Bulwark's
database only, the other has no such token).
"""
import hashlib
import hmac
import html
import json
import os
import threading
import time
from urllib.parse import parse_qs

from store import DbError, DbUnavailable, open_store

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = (open(os.path.join(HERE, "VERSION")).read().strip()
           if os.path.exists(os.path.join(HERE, "VERSION")) else "1")
APP = os.environ.get("BULWARK_APP_NAME", "python")
COOKIE = "pyguestbook_rw"
db = open_store()
# Cookies are signed with a key derived from the database credential, which
# every app server has and the tiers in front do not.
COOKIE_KEY = hashlib.sha256(b"pyguestbook cookie:" + (db.secret or "").encode()).digest()

LIST_SQL = "SELECT id, author, text, created_at, app FROM py_messages ORDER BY id DESC LIMIT ?"
INSERT_SQL = "INSERT INTO py_messages (author, text, created_at, app) VALUES (?, ?, ?, ?)"
_schema_ready = False
_schema_lock = threading.Lock()


def ensure_schema():
    global _schema_ready
    with _schema_lock:
        if not _schema_ready:
            db.ensure_schema()
            _schema_ready = True


def sign(token):
    value = f"{token['term']}.{token['index']}"
    mac = hmac.new(COOKIE_KEY, value.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{value}.{mac}"


def token_from_cookie(environ):
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name != COOKIE:
            continue
        term, _, rest = value.partition(".")
        index, _, mac = rest.partition(".")
        if term.isdigit() and index.isdigit() and hmac.compare_digest(mac, sign({"term": term, "index": index}).rsplit(".", 1)[1]):
            return {"term": int(term), "index": int(index)}
    return None


def respond(start_response, status, body, content_type="application/json", headers=()):
    data = body if isinstance(body, bytes) else (json.dumps(body) if content_type == "application/json" else body).encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), *headers])
    return [data]


def list_messages(environ, limit=20):
    rows = db.query(LIST_SQL, [limit], token=token_from_cookie(environ))
    return [{"id": r[0], "author": r[1], "text": r[2], "created_at": r[3], "app": r[4]} for r in rows]


def post_message(environ, author, text):
    author, text = author.strip(), text.strip()
    if not author or not text or len(author) > 64 or len(text) > 1000:
        return None, "author (1-64 characters) and text (1-1000) are required"
    key = environ.get("HTTP_IDEMPOTENCY_KEY")
    request_id = "pyguestbook:post:" + key if key else None
    now = int(time.time() * 1000)
    new_id, token = db.insert(INSERT_SQL, [author, text, now, APP], request_id=request_id)
    message = {"id": new_id, "author": author, "text": text, "created_at": now, "app": APP}
    return (message, token), None


def cookie_headers(environ, token):
    """The read-your-writes cookie for `token` (none without a token)."""
    if not token:
        return []
    secure = "; Secure" if environ.get("HTTP_X_FORWARDED_PROTO", "").startswith("https") else ""
    return [("Set-Cookie", f"{COOKIE}={sign(token)}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600{secure}")]


def page(environ, start_response):
    items = "".join(
        f"<li><b>{html.escape(m['author'])}</b>: {html.escape(m['text'])} <small>({html.escape(m['app'])})</small></li>"
        for m in list_messages(environ))
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Python guestbook</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><h1>Python guestbook</h1>
<p class="meta">served by {html.escape(APP)}, version {html.escape(VERSION)}</p>
<form method="post" action="/messages">
<input name="author" placeholder="name" maxlength="64" required>
<input name="text" placeholder="message" maxlength="1000" required>
<button>Post</button></form>
<ul>{items}</ul></body></html>"""
    return respond(start_response, "200 OK", body, "text/html; charset=utf-8")


def app(environ, start_response):
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    try:
        if path == "/health":
            ensure_schema()
            return respond(start_response, "200 OK", {"status": "ok", "app": APP, "version": VERSION})
        ensure_schema()
        if path == "/" and method == "GET":
            return page(environ, start_response)
        if path == "/messages" and method == "POST":
            # The form of the page (no script needed).
            if environ.get("HTTP_SEC_FETCH_SITE") in ("cross-site", "same-site"):
                return respond(start_response, "403 Forbidden", {"error": "posts only from this site's page"})
            size = min(int(environ.get("CONTENT_LENGTH") or 0), 16384)
            form = parse_qs(environ["wsgi.input"].read(size).decode("utf-8", "replace"))
            done, error = post_message(environ, form.get("author", [""])[0], form.get("text", [""])[0])
            if error:
                return respond(start_response, "422 Unprocessable Entity", {"error": error})
            return respond(start_response, "303 See Other", b"", "text/plain",
                           [("Location", "/"), *cookie_headers(environ, done[1])])
        if path == "/api/messages" and method == "GET":
            qs = parse_qs(environ.get("QUERY_STRING", ""))
            limit = qs.get("limit", ["20"])[0]
            if not limit.isdigit() or not 1 <= int(limit) <= 100:
                return respond(start_response, "400 Bad Request", {"error": "limit must be between 1 and 100"})
            return respond(start_response, "200 OK", {"messages": list_messages(environ, int(limit)),
                                                      "served_by": APP, "version": VERSION})
        if path == "/api/messages" and method == "POST":
            if not environ.get("CONTENT_TYPE", "").startswith("application/json"):
                return respond(start_response, "415 Unsupported Media Type", {"error": "send JSON"})
            size = min(int(environ.get("CONTENT_LENGTH") or 0), 16384)
            try:
                data = json.loads(environ["wsgi.input"].read(size) or b"{}")
                author, text = str(data["author"]), str(data["text"])
            except (ValueError, KeyError, TypeError):
                return respond(start_response, "400 Bad Request", {"error": 'expected {"author": ..., "text": ...}'})
            done, error = post_message(environ, author, text)
            if error:
                return respond(start_response, "422 Unprocessable Entity", {"error": error})
            message, token = done
            return respond(start_response, "201 Created",
                           {"message": message, "served_by": APP, "version": VERSION, "token": token},
                           headers=cookie_headers(environ, token))
        return respond(start_response, "404 Not Found", {"error": f"no such page: {path}"})
    except DbError as e:
        return respond(start_response, "500 Internal Server Error", {"error": f"database error: {e}"})
    except DbUnavailable as e:
        return respond(start_response, "503 Service Unavailable", {"error": f"database unavailable, try again: {e}"},
                       headers=[("Retry-After", "1")])
