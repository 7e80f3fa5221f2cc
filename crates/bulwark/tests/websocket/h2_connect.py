#!/usr/bin/env python3
"""A WebSocket over HTTP/2 (RFC 8441), driven by hand with the `h2`
package (Debian's python3-h2): TLS with ALPN h2, the server's
SETTINGS_ENABLE_CONNECT_PROTOCOL, an extended CONNECT (`:protocol
websocket`), then COUNT text messages as masked WebSocket frames in DATA
frames, each read back from the server's echo, then the end of the stream.

Usage: h2_connect.py PORT CAFILE PATH COUNT [PAUSE_MS]
(PATH `-`: a plain CONNECT to the lb's own authority, no `:protocol`;
PAUSE_MS: a pause between two messages, default none.)
Prints `status <code> protocol <sec-websocket-protocol>`, `echoed <n>`,
then `closed` when the server ended the stream, and `goaway` when the
server announced it closes the connection (GOAWAY) while the stream was
open."""
import os
import socket
import ssl
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events

port, cafile, path, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
pause = int(sys.argv[5]) / 1000 if len(sys.argv) > 5 else 0
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="localhost")
assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
# Outbound checks off: this h2 wants `:path` on a plain CONNECT too.
config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False)
conn = h2.connection.H2Connection(config)
conn.initiate_connection()
sock.sendall(conn.data_to_send())


def events():
    data = sock.recv(65536)
    if not data:
        sys.exit("the server closed the connection")
    evs = conn.receive_data(data)
    for e in evs:
        if isinstance(e, h2.events.DataReceived):
            conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        elif isinstance(e, h2.events.ConnectionTerminated):
            print("goaway", flush=True)
    sock.sendall(conn.data_to_send())
    return evs


settled = False
while not settled:
    settled = any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events())
assert conn.remote_settings.enable_connect_protocol == 1, "no SETTINGS_ENABLE_CONNECT_PROTOCOL"

sid = conn.get_next_available_stream_id()
if path == "-":
    request = [(":method", "CONNECT"), (":authority", f"localhost:{port}")]
else:
    request = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":path", path),
        (":authority", f"localhost:{port}"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "echo"),
    ]
conn.send_headers(sid, request)
sock.sendall(conn.data_to_send())
headers = None
while headers is None:
    for e in events():
        if isinstance(e, h2.events.ResponseReceived):
            headers = dict(e.headers)
        elif isinstance(e, h2.events.StreamReset) and headers is None:
            # A reset after a whole answer (NO_ERROR, RFC 9113 §8.1) is
            # the server ending a stream the client left open.
            sys.exit(f"stream reset: {e.error_code}")
print(f"status {headers[':status']} protocol {headers.get('sec-websocket-protocol', '-')}", flush=True)
if headers[":status"] != "200":
    sys.exit(0)


def frame(payload: bytes) -> bytes:
    """A final, masked text frame (a client's)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


received = b""
ended = False
for n in range(count):
    if n > 0:
        time.sleep(pause)
    message = f"message {n} over one HTTP/2 stream".encode()
    conn.send_data(sid, frame(message))
    sock.sendall(conn.data_to_send())
    # The server's frame: unmasked, final, text.
    while True:
        if len(received) >= 2 and len(received) >= 2 + (received[1] & 0x7F):
            length = received[1] & 0x7F
            assert received[0] == 0x81 and received[1] & 0x80 == 0, received[:2]
            echoed, received = received[2 : 2 + length], received[2 + length :]
            assert echoed == message, (echoed, message)
            break
        for e in events():
            if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                received += e.data
            elif isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)):
                sys.exit(f"the stream ended after {n} messages")
print(f"echoed {count}", flush=True)

conn.end_stream(sid)
sock.sendall(conn.data_to_send())
while not ended:
    for e in events():
        if isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid:
            ended = True
print("closed", flush=True)
