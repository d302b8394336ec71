"""A WebSocket peer built on Python's websockets (Debian's python3-websockets,
10.x, legacy asyncio API), driven by tether's interop tests
(interop/interop_test.go) through JSON lines: commands on stdin, events on
stdout. Same protocol as ../node/peer.js:

  /usr/bin/python3 peer.py client URL [PROTOCOL...]
  /usr/bin/python3 peer.py server [PROTOCOL...]

Commands: {"op":"send","type":"text"|"binary","size":N,"seed":S,"fragments":F},
{"op":"jsonping","id":N}, {"op":"ping","data":D}, {"op":"close","code":C,
"reason":R}, {"op":"stats"}, {"op":"connect","url":U,"protocols":[...]}
(client: a new connection, which the commands then apply to); EOF on stdin
ends the process. Events: listening {port}; open {protocol, extensions, offered};
message {type, size, sha256, text}; pong {data}; close {code, reason};
stats {messages, jsonpings, pings}; error {message}.

JSON pings ({"type":"ping"}, at most 4 KiB) are answered with the same
object with "type":"pong" and counted, not reported. RFC 6455 pings are
answered by websockets itself; they are counted through its pong() call.
"""

import asyncio
import hashlib
import json
import os
import ssl
import sys

import websockets
import websockets.client
import websockets.server

UNIT = "tether ✓ interop 世界 🌍 ".encode()

stats = {"messages": 0, "jsonpings": 0, "pings": 0}
current = None


def gen(kind, size, seed):
    """The test payload, as in node/peer.js gen()."""
    if kind == "binary":
        return bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(size))
    head = ("#%d|" % seed).encode()
    if size < len(head):
        return b"." * size
    whole = (size - len(head)) // len(UNIT)
    out = head + UNIT * whole
    return out + b"." * (size - len(out))


def emit(ev):
    sys.stdout.write(json.dumps(ev) + "\n")
    sys.stdout.flush()


class CountingPongs:
    """Counts the pongs websockets sends: it answers every RFC ping with
    pong(), and this script never calls pong() itself."""

    async def pong(self, data=b""):
        stats["pings"] += 1
        await super().pong(data)


class ClientProtocol(CountingPongs, websockets.client.WebSocketClientProtocol):
    pass


class ServerProtocol(CountingPongs, websockets.server.WebSocketServerProtocol):
    pass


async def receive(ws):
    try:
        async for msg in ws:
            if isinstance(msg, str) and len(msg.encode()) <= 4096:
                try:
                    obj = json.loads(msg)
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and obj.get("type") == "ping":
                    stats["jsonpings"] += 1
                    obj["type"] = "pong"
                    await ws.send(json.dumps(obj, separators=(",", ":")))
                    continue
            stats["messages"] += 1
            data = msg.encode() if isinstance(msg, str) else msg
            emit(
                {
                    "ev": "message",
                    "type": "text" if isinstance(msg, str) else "binary",
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "text": msg if isinstance(msg, str) and len(data) <= 256 else None,
                }
            )
    except websockets.ConnectionClosed:
        pass
    await ws.wait_closed()
    emit({"ev": "close", "code": ws.close_code, "reason": ws.close_reason or ""})


def fragments(data, kind, n):
    if kind == "text":
        s = data.decode()  # websockets sends str fragments: split by character
        step = -(-len(s) // n)
        return [s[i * step : (i + 1) * step] for i in range(n)]
    step = -(-len(data) // n)
    return [data[i * step : (i + 1) * step] for i in range(n)]


async def send(cmd):
    ws = current
    if ws is None or not ws.open:
        emit({"ev": "error", "message": "send: not open"})
        return
    data = gen(cmd["type"], cmd["size"], cmd["seed"])
    n = max(1, cmd.get("fragments") or 1)
    if n == 1:
        await ws.send(data.decode() if cmd["type"] == "text" else data)
    else:
        # A list (an iterable) of fragments is sent as one fragmented message.
        await ws.send(fragments(data, cmd["type"], n))


async def ping(ws, data):
    # websockets resolves the waiter when the pong with this payload comes.
    waiter = await ws.ping(data.encode())
    await waiter
    emit({"ev": "pong", "data": data})


async def commands(done):
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            done.set_result(None)
            return
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "send":
            await send(cmd)
        elif op == "jsonping":
            await current.send(json.dumps({"type": "ping", "id": cmd["id"]}))
        elif op == "ping":
            asyncio.ensure_future(ping(current, cmd["data"]))
        elif op == "close":
            if current is not None:
                asyncio.ensure_future(current.close(cmd["code"], cmd["reason"]))
        elif op == "connect":
            await connect(cmd["url"], cmd["protocols"])
        elif op == "stats":
            emit(dict(ev="stats", **stats))
        else:
            emit({"ev": "error", "message": "unknown op %s" % op})


async def connect(url, protocols):
    global current
    # websockets offers permessage-deflate by default, as a browser does.
    # For wss, INTEROP_CA names the PEM file of the certificate to trust.
    tls = None
    if url.startswith("wss://"):
        tls = ssl.create_default_context(cafile=os.environ.get("INTEROP_CA"))
    ws = await websockets.connect(
        url,
        ssl=tls,
        subprotocols=protocols or None,
        ping_interval=None,
        max_size=16 << 20,
        create_protocol=ClientProtocol,
    )
    current = ws
    emit(
        {
            "ev": "open",
            "protocol": ws.subprotocol or "",
            "extensions": ws.response_headers.get("Sec-WebSocket-Extensions", ""),
        }
    )
    asyncio.ensure_future(receive(ws))


async def client(url, protocols):
    done = asyncio.get_running_loop().create_future()
    await connect(url, protocols)
    asyncio.ensure_future(commands(done))
    await done


async def server(protocols):
    done = asyncio.get_running_loop().create_future()

    def choose(offered, supported):
        for p in supported:
            if p in offered:
                return p
        return None

    async def handler(ws, path):
        global current
        current = ws
        emit(
            {
                "ev": "open",
                "protocol": ws.subprotocol or "",
                "extensions": ws.request_headers.get("Sec-WebSocket-Extensions", ""),
                "offered": ", ".join(ws.request_headers.get_all("Sec-WebSocket-Protocol")),
            }
        )
        await receive(ws)

    # With INTEROP_CERT and INTEROP_KEY (PEM files) it serves wss.
    tls = None
    if os.environ.get("INTEROP_CERT"):
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(os.environ["INTEROP_CERT"], os.environ["INTEROP_KEY"])
    srv = await websockets.serve(
        handler,
        "127.0.0.1",
        0,
        ssl=tls,
        subprotocols=protocols or None,
        select_subprotocol=choose,
        ping_interval=None,
        max_size=16 << 20,
        create_protocol=ServerProtocol,
    )
    port = srv.sockets[0].getsockname()[1]
    emit({"ev": "listening", "port": port})
    asyncio.ensure_future(commands(done))
    await done
    srv.close()


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "client":
        coro = client(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "server":
        coro = server(sys.argv[2:])
    else:
        sys.stderr.write("usage: peer.py client URL [PROTOCOL...] | server [PROTOCOL...]\n")
        sys.exit(2)
    asyncio.run(coro)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
