"""WebSocket client for the tunnel tests, on Python's `websockets` package.

usage: client.py URL CA_PEM echo N       send N messages, expect each echoed
       client.py URL CA_PEM failover     one message, wait for the server to
                                         go away, read a line on stdin, then
                                         connect again and echo one message
       client.py URL CA_PEM idle SECS    one message, SECS of silence, one
                                         more, then wait for the tunnel's
                                         idle timeout to close the socket

CA_PEM is `-` for a ws:// URL.

Prints one line per fact (`served_by NAME`, `echoed N`, `closed CODE`) and
exits non-zero on anything unexpected.
"""
import asyncio
import ssl
import sys

import websockets


def context(ca):
    if ca == "-":
        return None
    return ssl.create_default_context(cafile=ca)


def say(*words):
    print(*words, flush=True)


async def open_socket(url, ca):
    ws = await asyncio.wait_for(websockets.connect(url, ssl=context(ca), max_size=2**16), 20)
    say("served_by", ws.response_headers.get("X-Served-By", "?"))
    return ws


async def echo(url, ca, n):
    ws = await open_socket(url, ca)
    for i in range(n):
        text = f"message {i} " + "x" * (i % 97)
        await ws.send(text)
        back = await asyncio.wait_for(ws.recv(), 20)
        if back != text:
            raise SystemExit(f"message {i}: sent {text!r}, got {back!r}")
        data = bytes([i % 256]) * (1 + i % 300)
        await ws.send(data)
        back = await asyncio.wait_for(ws.recv(), 20)
        if back != data:
            raise SystemExit(f"binary message {i} came back different")
    say("echoed", n)
    await ws.close()
    say("closed", ws.close_code)


async def failover(url, ca):
    ws = await open_socket(url, ca)
    await ws.send("before")
    assert await asyncio.wait_for(ws.recv(), 20) == "before"
    say("ready")
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 60)
    except websockets.ConnectionClosed as e:
        say("closed", e.code)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    ws = await open_socket(url, ca)
    await ws.send("after")
    back = await asyncio.wait_for(ws.recv(), 20)
    if back != "after":
        raise SystemExit(f"got {back!r} after reconnecting")
    say("echoed", 1)
    await ws.close()


async def idle(url, ca, secs):
    ws = await open_socket(url, ca)
    for word in ("before", "after"):
        await ws.send(word)
        back = await asyncio.wait_for(ws.recv(), 20)
        if back != word:
            raise SystemExit(f"sent {word!r}, got {back!r}")
        if word == "before":
            await asyncio.sleep(secs)
    say("alive after", secs)
    try:
        await asyncio.wait_for(ws.recv(), 60)
        raise SystemExit("a message came on a silent socket")
    except websockets.ConnectionClosed as e:
        say("closed", e.code)


def main():
    url, ca, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "echo":
        asyncio.run(echo(url, ca, int(sys.argv[4])))
    elif mode == "idle":
        asyncio.run(idle(url, ca, float(sys.argv[4])))
    elif mode == "failover":
        asyncio.run(failover(url, ca))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
