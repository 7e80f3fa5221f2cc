"""A small client of Bulwark's replicated database (HTTP API, docs/db.md),
with the Python standard library only.

Bulwark's app role gives the program:
  BULWARK_DB_NODES        the database nodes, comma-separated host:port
  BULWARK_DB_SECRET_FILE  a file holding the credential (sent as a bearer token)
  BULWARK_DB_CA, BULWARK_DB_CERT, BULWARK_DB_KEY
                          under mutual TLS (topology `internal_tls`): the files of
                          the cluster CA and of the client certificate and key

Writes go to the primary (a replica redirects with 307 or says who the
leader is); each carries a request id, so a write retried after a failover
is applied at most once. Reads go to any node; with the token of the
client's last write (read-your-writes) the node waits until it has applied
that write.

Each thread keeps its connection to each node open between requests (one
TCP connect, and under mutual TLS one handshake, per node instead of per
request). A request whose kept connection turns out closed by the node
(idle timeout, restart) is sent again on a new connection at once: writes
carry their request id, so this never applies one twice.

The HTTP/1.1 exchange is written here (`_Connection`) rather than with
`http.client`: the request's head is made once per node and path, and the
answer's status line and headers are read with a few byte operations.
`http.client` parses every answer's headers with the `email` package,
which cost the app more CPU per request than the rest of this client.
"""
import json
import os
import random
import socket
import ssl
import threading
import time
import uuid

from store import DbError, DbUnavailable

SCHEMA = ("CREATE TABLE IF NOT EXISTS py_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, "
          "author TEXT NOT NULL, text TEXT NOT NULL, created_at INTEGER NOT NULL, app TEXT NOT NULL)")


class Database:
    def __init__(self, nodes=None, secret_file=None, deadline=5.0):
        nodes = nodes or os.environ.get("BULWARK_DB_NODES", "")
        self.nodes = [n.strip() for n in nodes.split(",") if n.strip()]
        if not self.nodes:
            raise ValueError("no database nodes (BULWARK_DB_NODES)")
        secret_file = secret_file or os.environ.get("BULWARK_DB_SECRET_FILE")
        self.secret = open(secret_file).read().strip() if secret_file else None
        self.deadline = deadline
        self.primary = None
        self._local = threading.local()
        self._heads = {}
        # Mutual TLS: the database checks our certificate, we check its
        # certificate against the cluster CA (it names the node's address).
        self.tls = None
        ca = os.environ.get("BULWARK_DB_CA")
        if ca:
            self.tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
            self.tls.load_cert_chain(os.environ["BULWARK_DB_CERT"], os.environ["BULWARK_DB_KEY"])

    def _connection(self, node):
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(node)
        if conn is None:
            host, port = node.rsplit(":", 1)
            conn = _Connection(host, int(port), self.tls)
            conns[node] = conn
        return conn

    def _drop(self, node):
        conn = self._local.__dict__.get("conns", {}).pop(node, None)
        if conn is not None:
            conn.close()

    def _head(self, node, path):
        """The request line and headers of a POST of JSON to `path` on
        `node`, up to the Content-Length value (made once per node and path)."""
        key = (node, path)
        head = self._heads.get(key)
        if head is None:
            auth = f"Authorization: Bearer {self.secret}\r\n" if self.secret else ""
            head = (f"POST {path} HTTP/1.1\r\nHost: {node}\r\nContent-Type: application/json\r\n{auth}"
                    "Content-Length: ").encode()
            self._heads[key] = head
        return head

    def _post(self, node, path, payload):
        data = json.dumps(payload).encode()
        request = b"".join((self._head(node, path), str(len(data)).encode(), b"\r\n\r\n", data))
        for attempt in (1, 2):
            reused = node in self._local.__dict__.get("conns", {})
            try:
                conn = self._connection(node)
                status, location, close, body = conn.exchange(request)
                # A replica that passed the write on says where the primary is.
                location = location or conn.primary
            except _Closed as e:
                # A kept connection the node had closed: once more on a new one.
                self._drop(node)
                if reused and attempt == 1:
                    continue
                raise OSError(str(e)) from e
            except (OSError, ValueError) as e:
                self._drop(node)
                raise OSError(str(e)) from e
            if close:
                self._drop(node)
            return status, location, json.loads(body or b"{}")

    def _call(self, path, payload, prefer_primary):
        end = time.monotonic() + self.deadline
        last = "no node answered"
        while time.monotonic() < end:
            order = random.sample(self.nodes, len(self.nodes))
            if prefer_primary and self.primary:
                order.insert(0, self.primary)
            for node in order:
                try:
                    status, location, body = self._post(node, path, payload)
                except (OSError, ValueError) as e:
                    last = f"{node}: {e}"
                    continue
                if status == 200:
                    if prefer_primary:
                        # Answered by the primary, or passed on to it by a
                        # replica that said where it is.
                        self.primary = location or node
                    return body
                if status in (307, 308) and location:
                    self.primary = location.split("//", 1)[-1].split("/", 1)[0]
                    last = f"{node}: redirected to {self.primary}"
                    break
                if body.get("code") == "bad_token" and "token" in payload:
                    payload = {k: v for k, v in payload.items() if k != "token"}
                    break
                if not body.get("retryable"):
                    raise DbError(body.get("error", f"HTTP {status}"))
                if body.get("leader"):
                    self.primary = body["leader"]
                last = f"{node}: {body.get('error', status)}"
                break
            time.sleep(0.05)
        raise DbUnavailable(last)

    def execute(self, statements, request_id=None):
        """Run [(sql, params), ...] as one transaction on the primary.
        Returns {"last_insert_id", "rows_affected", "token", "replayed"?}."""
        payload = {
            "statements": [{"sql": sql, "params": list(params)} for sql, params in statements],
            "request_id": request_id or "pyguestbook:" + uuid.uuid4().hex,
        }
        return self._call("/v1/execute", payload, prefer_primary=True)

    def query(self, sql, params=(), token=None):
        """Rows of a read; with `token` ({"term", "index"}), the answering
        node has applied that write first."""
        payload = {"sql": sql, "params": list(params), "consistency": "none"}
        if token:
            payload["token"] = token
        return self._call("/v1/query", payload, prefer_primary=False)["rows"]


class _Closed(ConnectionError):
    """The node closed the connection before answering."""


class _Connection:
    """One kept-alive HTTP/1.1 connection to a database node: a request is
    written whole, the answer read to the end of its body."""

    def __init__(self, host, port, tls):
        sock = socket.create_connection((host, port), timeout=2.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            sock = tls.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.reader = sock.makefile("rb")
        # The primary's address a replica named on the last answer.
        self.primary = None

    def close(self):
        self.reader.close()
        self.sock.close()

    def exchange(self, request):
        """Send `request` (bytes); (status, Location or None, whether the
        node closes the connection, body)."""
        try:
            self.sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _Closed(str(e)) from e
        reader = self.reader
        try:
            line = reader.readline(65537)
        except ConnectionResetError as e:
            raise _Closed(str(e)) from e
        if not line:
            raise _Closed("the node closed the connection")
        version, status, _ = (line.split(None, 2) + [b""])[:3]
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x answer: {line[:80]!r}")
        status = int(status)
        length, location, close, chunked = None, None, version == b"HTTP/1.0", False
        self.primary = None
        while True:
            h = reader.readline(65537)
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise OSError("the node closed the connection in the answer's headers")
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"location":
                location = value.strip().decode("latin-1")
            elif name == b"x-bulwark-primary":
                self.primary = value.strip().decode("latin-1")
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if chunked:
            body = self._chunks()
        elif length is not None:
            body = reader.read(length)
            if len(body) < length:
                raise OSError("the node closed the connection in the answer's body")
        else:
            body, close = reader.read(), True
        return status, location, close, body

    def _chunks(self):
        reader, parts = self.reader, []
        while True:
            size = int(reader.readline(65537).split(b";", 1)[0], 16)
            if size == 0:
                # Trailers, up to the empty line.
                while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            part = reader.read(size)
            if len(part) < size or reader.readline(65537) not in (b"\r\n", b"\n"):
                raise OSError("the node closed the connection in the answer's body")
            parts.append(part)


class BulwarkStore:
    """The guestbook's data-access interface (store.py) on Bulwark's database."""

    def __init__(self):
        self.db = Database()
        self.secret = self.db.secret

    def ensure_schema(self):
        self.db.execute([(SCHEMA, [])])

    def insert(self, sql, params, request_id=None):
        """Run one INSERT on the primary, at most once per `request_id`:
        (id of the new row, read-your-writes token)."""
        r = self.db.execute([(sql, params)], request_id=request_id)
        return r["last_insert_id"], r["token"]

    def query(self, sql, params=(), token=None):
        return self.db.query(sql, params, token=token)
