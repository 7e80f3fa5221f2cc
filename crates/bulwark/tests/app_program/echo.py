"""A small program for the app role's tests: answers every request with
what it saw (path, headers, its environment, the database credential file)
and logs to stdout and stderr. MODE=ignore_term ignores SIGTERM. It listens
on BULWARK_SOCKET when the role gives it a Unix socket, else on PORT.
HEALTH_HOST_CHECK=1 answers 400 to GET /ping unless its Host is the
program's own address. GET /swap-socket replaces its socket with a link to
SWAP_TO (what a compromised program could do)."""
import http.server
import json
import os
import signal
import socketserver
import sys

if os.environ.get("MODE") == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"echo program listening on {os.environ['BULWARK_LISTEN']} (argv {sys.argv[1:]})", flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        if self.path == "/ping" and os.environ.get("HEALTH_HOST_CHECK") == "1" \
                and self.headers.get("Host") != os.environ["BULWARK_LISTEN"]:
            return self.reply(400, b"wrong host")
        if self.path == "/swap-socket":
            os.unlink(os.environ["BULWARK_SOCKET"])
            os.symlink(os.environ["SWAP_TO"], os.environ["BULWARK_SOCKET"])
            # No kept connection: the role's next request connects anew.
            self.close_connection = True
            return self.reply(200, b"swapped", close=True)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        secret_file = os.environ.get("BULWARK_DB_SECRET_FILE")
        out = json.dumps({
            "method": self.command,
            "path": self.path,
            "body": body,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "env": {k: v for k, v in os.environ.items() if k.startswith("BULWARK_") or k in ("PORT", "GREETING")},
            "db_secret": open(secret_file).read() if secret_file else None,
            "pid": os.getpid(),
            "uid": os.getuid(),
            "db_tls_readable": [os.access(os.environ[k], os.R_OK)
                                for k in ("BULWARK_DB_CA", "BULWARK_DB_CERT", "BULWARK_DB_KEY") if k in os.environ],
        }).encode()
        self.reply(200, out)

    def reply(self, status, out, close=False):
        self.send_response(status)
        if close:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = answer
    do_POST = answer

    def log_message(self, fmt, *args):
        sys.stderr.write("access " + (fmt % args) + "\n")
        sys.stderr.flush()


class UnixHandler(Handler):
    def address_string(self):
        return "unix"


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if "BULWARK_SOCKET" in os.environ:
    UnixHTTPServer(os.environ["BULWARK_SOCKET"], UnixHandler).serve_forever()
else:
    http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
