"""The guestbook's data-access layer: one small interface, two databases,
chosen by the environment.

  GUESTBOOK_DB=bulwark   Bulwark's replicated database over its HTTP API
                         (bulwarkdb.py): the default when BULWARK_DB_NODES is
                         set, as under `bulwark up`. Writes go to the primary
                         with a request id; a write returns a read-your-writes
                         token, and a read given that token waits for it.
  GUESTBOOK_DB=mysql     MySQL or MariaDB, primary + replica (mysqldb.py,
                         PyMySQL): writes to the primary, reads from the
                         replica, as the classic two-server site does. No
                         tokens: a read may miss the poster's own write until
                         the replica has applied it.

The application's statements are the same on both (`?` placeholders); only
the schema is written per database, since SQLite and MySQL spell an
auto-increment key differently. Both raise the same two errors:
  DbError        the database refused the request (bad SQL, bad input):
                 the client gets a 500, retrying does not help
  DbUnavailable  no database could take the request now (primary down,
                 failover, timeout): the client gets a 503 and may retry
"""
import os


class DbError(Exception):
    """The database refused the request (bad SQL, bad input): not retried."""


class DbUnavailable(Exception):
    """No database node could take the request before the deadline."""


def open_store():
    """The backend named by GUESTBOOK_DB (see the module doc)."""
    kind = os.environ.get("GUESTBOOK_DB") or ("bulwark" if os.environ.get("BULWARK_DB_NODES") else "")
    if kind == "bulwark":
        from bulwarkdb import BulwarkStore
        return BulwarkStore()
    if kind == "mysql":
        from mysqldb import MysqlStore
        return MysqlStore()
    raise ValueError(f"GUESTBOOK_DB must be `bulwark` or `mysql` (got {kind!r}; "
                     "under `bulwark up` BULWARK_DB_NODES selects `bulwark`)")
