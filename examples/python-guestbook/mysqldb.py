"""The guestbook's MySQL/MariaDB backend (PyMySQL, Debian's python3-pymysql):
the classic primary + replica design. Writes go to the primary, reads to
the replica; there is no read-your-writes token (a poster's next read may
come before the replica applied the write) and no failover: when the
primary is gone, writes fail until an operator promotes the replica and
points the app servers at it (they read these variables when their
workers start, so a gunicorn reload, SIGHUP, picks up a new primary).

  GUESTBOOK_MYSQL_PRIMARY        host:port of the primary (writes)
  GUESTBOOK_MYSQL_REPLICA        host:port of the replica (reads); the
                                 primary when unset
  GUESTBOOK_MYSQL_USER           default `guestbook`
  GUESTBOOK_MYSQL_PASSWORD_FILE  a file holding the password (or
  GUESTBOOK_MYSQL_PASSWORD       the password itself)
  GUESTBOOK_MYSQL_DATABASE       default `guestbook`

Each worker keeps one connection per server and opens it again after an
error. A read that fails on a connection that had worked before is tried
once more on a new one (the server may have closed an idle connection); a
write is never sent twice, since it may have been committed before the
connection broke.
"""
import os
import threading

import pymysql

from store import DbError, DbUnavailable

SCHEMA = ("CREATE TABLE IF NOT EXISTS py_messages (id BIGINT PRIMARY KEY AUTO_INCREMENT, "
          "author TEXT NOT NULL, text TEXT NOT NULL, created_at BIGINT NOT NULL, app TEXT NOT NULL) "
          "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
# Server errors worth retrying later (not the request's fault): lock wait
# timeout, deadlock, read-only server (a replica, or a primary being
# demoted), too many connections, server shutting down, connection killed.
RETRYABLE = {1205, 1213, 1290, 1836, 1040, 1053, 1927}


def _address(value, what):
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{what} must be host:port, got {value!r}")
    return host, int(port)


def _placeholders(sql):
    # The application writes `?` (SQLite's and Bulwark's style); PyMySQL
    # wants `%s`, and a literal `%` doubled.
    return sql.replace("%", "%%").replace("?", "%s")


class MysqlStore:
    def __init__(self):
        primary = os.environ.get("GUESTBOOK_MYSQL_PRIMARY")
        if not primary:
            raise ValueError("no MySQL primary (GUESTBOOK_MYSQL_PRIMARY=host:port)")
        self.primary = _address(primary, "GUESTBOOK_MYSQL_PRIMARY")
        self.replica = _address(os.environ.get("GUESTBOOK_MYSQL_REPLICA") or primary, "GUESTBOOK_MYSQL_REPLICA")
        self.user = os.environ.get("GUESTBOOK_MYSQL_USER", "guestbook")
        password_file = os.environ.get("GUESTBOOK_MYSQL_PASSWORD_FILE")
        self.password = (open(password_file).read().strip() if password_file
                         else os.environ.get("GUESTBOOK_MYSQL_PASSWORD", ""))
        self.database = os.environ.get("GUESTBOOK_MYSQL_DATABASE", "guestbook")
        # Signs nothing the database checks: the guestbook derives its cookie
        # key from it, and this backend sets no cookie.
        self.secret = self.password
        self._local = threading.local()

    def _connection(self, server):
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(server)
        if conn is None:
            try:
                conn = pymysql.connect(host=server[0], port=server[1], user=self.user, password=self.password,
                                       database=self.database, autocommit=True, charset="utf8mb4",
                                       connect_timeout=2, read_timeout=5, write_timeout=5)
            except pymysql.err.MySQLError as e:
                raise DbUnavailable(f"{server[0]}:{server[1]}: {e}") from e
            conns[server] = conn
        return conn

    def _drop(self, server):
        conn = self._local.__dict__.get("conns", {}).pop(server, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _run(self, server, sql, params, retry_read):
        reused = server in self._local.__dict__.get("conns", {})
        conn = self._connection(server)
        try:
            with conn.cursor() as cur:
                cur.execute(_placeholders(sql), tuple(params))
                return cur.lastrowid, cur.fetchall()
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError, pymysql.err.InternalError,
                OSError) as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
            if isinstance(e, pymysql.err.OperationalError) and code and code < 2000 and code not in RETRYABLE:
                raise DbError(str(e)) from e
            self._drop(server)
            if retry_read and reused:
                return self._run(server, sql, params, retry_read=False)
            raise DbUnavailable(f"{server[0]}:{server[1]}: {e}") from e
        except pymysql.err.MySQLError as e:
            raise DbError(str(e)) from e

    def ensure_schema(self):
        self._run(self.primary, SCHEMA, (), retry_read=False)

    def insert(self, sql, params, request_id=None):
        """Run one INSERT on the primary: (id of the new row, None: no token).
        `request_id` is ignored: MySQL has no store of request ids, so a
        retried post is stored again."""
        last_id, _ = self._run(self.primary, sql, params, retry_read=False)
        return last_id, None

    def query(self, sql, params=(), token=None):
        """Rows of a read, from the replica (`token` is ignored)."""
        _, rows = self._run(self.replica, sql, params, retry_read=True)
        return [list(r) for r in rows]
