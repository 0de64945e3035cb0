"""Malformed WebSocket frames and raw HTTP garbage against a local Clubhouse.

Frames (--frames, default 2400, over a few sockets at once): bad JSON, wrong types, unknown types,
huge frames, deep nesting, raw control characters, invalid UTF-8 in text frames, binary frames. Every
one must get an `error` frame (or, for invalid UTF-8, which the WebSocket protocol forbids, a close
by the runtime with 1007), and the socket must keep working: each socket's last act is a valid
message that must come back. Nothing the fuzzer sends may be broadcast.

HTTP (--requests, default 2400, raw TCP): bad methods, paths, versions and headers, bodies that do
not match their Content-Type or Content-Length, bodies cut short (the connection then closed whole:
a half-close after a short body makes wrangler dev 4.86 itself answer 500 and exit, see
docs/runtime/README.md). Every answer from the Worker must be a 4xx (or 2xx where the request happens
to be valid), never a 5xx, never a dropped connection. Requests the runtime refuses before the Worker
runs (a `*` or absolute-form target, CONNECT, a bad Content-Length, an empty second Host, a method
name it does not parse: 500/501/400, the same from a plain JS Worker) are counted apart.

Prints a summary and one JSON line; exit status 1 on any 5xx, lost socket, missing error frame or
anything broadcast.
"""

import asyncio
import json
import os
import random
import socket
import sys
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chat  # noqa: E402

# ------------------------------------------------------------------------------------------------
# Frames
# ------------------------------------------------------------------------------------------------


def bad_frames(rng, room, n):
    """(kind, payload, is_text) for `n` frames that must each be refused."""
    def junk(k):
        return "".join(rng.choice('{}[]":,\\ abc0123456789eE.-+tfnul\u00e9\u4e2d') for _ in range(k))

    makers = [
        ("bad_json", lambda: junk(rng.randint(1, 200)), True),
        ("truncated_json", lambda: json.dumps({"content": "hi", "room_id": room})[: rng.randint(1, 20)], True),
        ("not_object", lambda: rng.choice(["[]", "1", "null", "true", '"hi"', "[1,2]", "3.5", "-0"]), True),
        ("wrong_types", lambda: json.dumps({"content": rng.choice([1, None, [], {}, True, 2.5, ["x"]]),
                                            "room_id": room}), True),
        ("wrong_room_type", lambda: json.dumps({"content": "x", "room_id": rng.choice([1, [], {}, True, 2.5])}), True),
        ("other_room", lambda: json.dumps({"content": "x", "room_id": room + "-other"}), True),
        ("unknown_type", lambda: json.dumps({"type": rng.choice(["MESSAGE", "kick", "ban", "admin", "", "x" * 300,
                                                                 "__proto__", "constructor", "edit\u0000"]),
                                             "content": "x"}), True),
        ("bad_edit", lambda: json.dumps({"type": "edit", "id": rng.choice([-1, 0, "1", 1.5, None, 2**70]),
                                         "content": "x"}), True),
        ("bad_react", lambda: json.dumps({"type": "react", "id": 1, "emoji": rng.choice(["", "a", "👍" * 20, 5,
                                                                                       "\u0000", " "])}), True),
        ("empty_content", lambda: json.dumps({"content": rng.choice(["", " ", "\u0000", "\u200b\u200d", "\t\n",
                                                                     "\ufeff", "\u3164"])}), True),
        ("too_long", lambda: json.dumps({"content": "x" * rng.randint(4001, 20000)}), True),
        ("huge", lambda: json.dumps({"content": "y" * rng.randint(70_000, 300_000)}), True),
        ("deep_nesting", lambda: "[" * rng.randint(129, 5000) + "]" * rng.randint(0, 10), True),
        ("deep_object", lambda: '{"content":' + '{"a":' * rng.randint(129, 3000) + "1", True),
        ("raw_control_chars", lambda: '{"content":"a' + chr(rng.randint(0, 31)) + 'b"}', True),
        ("duplicate_keys", lambda: '{"content":"a","content":5}', True),
        ("invalid_utf8", lambda: rng.choice([b"\xff\xfe", b'{"content":"\xc3\x28"}', b"\xed\xa0\x80",
                                             b"\xf8\x88\x80\x80\x80"]), "utf8"),
        ("binary", lambda: bytes(rng.randrange(256) for _ in range(rng.randint(0, 512))), False),
    ]
    out = []
    for i in range(n):
        kind, make, text = makers[i % len(makers)]
        out.append((kind, make(), text))
    rng.shuffle(out)
    return out


# Contents of messages the runtime made valid by decoding invalid UTF-8 (see frame_worker).
DECODED = set()


async def frame_worker(url, room, token, frames, stats, marker):
    """Sends `frames` on sockets to `room`, one at a time, each awaiting its answer; reopens a
    socket only after an invalid-UTF-8 close."""
    ws_url = f"{url.replace('http', 'ws', 1)}/ws/{room}?token={token}"
    ws = None

    async def opened():
        s = await websockets.connect(ws_url, max_size=2**24, open_timeout=20, close_timeout=2)
        first = json.loads(await s.recv())
        assert first["type"] == "history", first
        return s

    for kind, payload, text in frames:
        if ws is None:
            ws = await opened()
        stats["frames"] += 1
        try:
            if text == "utf8":
                await ws.send(payload, text=True)
            else:
                await ws.send(payload)
            while True:
                reply = await asyncio.wait_for(ws.recv(), 10)
                if reply == "pong":
                    continue
                frame = json.loads(reply)
                if frame.get("type") == "error":
                    stats["error_frames"] += 1
                    break
                if frame.get("type") == "message" and text == "utf8":
                    # The runtime decodes a text frame's invalid UTF-8 as U+FFFD before the Worker
                    # sees it: what arrives is valid text, and a valid message is a message.
                    stats["utf8_replaced"] += 1
                    DECODED.add(frame["content"])
                    break
                if frame.get("type") in ("message", "edited", "deleted", "reactions"):
                    stats["accepted"] += 1
                    stats["findings"].append(f"{kind}: accepted: {str(payload)[:120]!r}")
                    break
                # presence, join, typing, ...: not an answer; keep reading
        except websockets.ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            if text == "utf8" and code == 1007:
                stats["closed_1007"] += 1  # the protocol's answer to invalid UTF-8, from the runtime
            else:
                stats["sockets_lost"] += 1
                stats["findings"].append(f"{kind}: socket closed ({code}) after {str(payload)[:80]!r}")
            ws = None
        except asyncio.TimeoutError:
            stats["no_answer"] += 1
            stats["findings"].append(f"{kind}: no answer in 10 s to {str(payload)[:80]!r}")
    if ws is None:
        ws = await opened()
    # The socket still works.
    content = f"{marker} still here {random.random()}"
    await ws.send(json.dumps({"content": content}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame.get("type") == "message" and frame["content"] == content:
            break
    await ws.close()


async def fuzz_frames(url, n, rng, stats):
    """Four sockets, each in a room of its own with a quiet listener beside it: an answer is always
    to the socket's own frame, and the listener sees whatever was broadcast."""
    token = chat.signup_and_login(url, chat.name("fuzz"))
    frames = bad_frames(rng, "fuzz-room", n)
    workers = 4
    marker = chat.name("m")

    async def one(i):
        room = chat.name("fuzz-")
        mine = [(kind, payload.replace("fuzz-room", room) if isinstance(payload, str) else payload, text)
                for kind, payload, text in frames[i::workers]]
        listener = await websockets.connect(f"{url.replace('http', 'ws', 1)}/ws/{room}?token={token}",
                                            max_size=2**24)
        await listener.recv()
        await frame_worker(url, room, token, mine, stats, marker)
        # Only the worker's closing "still here" message may have been broadcast.
        while True:
            try:
                frame = json.loads(await asyncio.wait_for(listener.recv(), 1))
            except asyncio.TimeoutError:
                break
            if (frame.get("type") == "message" and not frame["content"].startswith(marker)
                    and frame["content"] not in DECODED):
                stats["broadcast"] += 1
                stats["findings"].append(f"broadcast: {frame['content'][:80]!r}")
        await listener.close()

    await asyncio.gather(*(one(i) for i in range(workers)))


# ------------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------------

PATHS = ["/", "/users/", "/users", "/token", "/logout", "/rooms", "/rooms/", "/rooms/lobby", "/rooms/lobby/messages",
         "/rooms/lobby/members", "/rooms/lobby/members/alice", "/rooms/lobby/stats", "/ws/lobby", "/healthz",
         "/app.js", "/index.html"]
BAD_PATHS = ["/rooms/%00", "/rooms/" + "a" * 300, "/rooms/..%2f..%2fetc", "/ws/%ff", "/users/../token", "//token",
             "/rooms/lobby/messages?before=-1", "/rooms/lobby/messages?limit=1e9", "/rooms/lobby/messages?" + "a" * 400,
             "/%", "/%zz", "/rooms/lobby/members/" + "%e2%80%8b", "/rooms/lobby/members/a%00b", "/\u00e9",
             "/rooms/lobby?x=" + "%" * 50, "*", "http://evil/", "/rooms/lobby/../../x", "/" + "x/" * 600]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "QUERY", "PROPFIND",
           "get", "G\u00c9T", "GET\x00", "X" * 100, "", "POST /x"]
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data",
                 "application/json; charset=utf-16", "application/xml", "", "*/*", "application/json\x00",
                 "x" * 2000]
BODIES = [b"", b"{", b'{"username":1,"password":[]}', b"username=&password=", b"\xff\xfe\x00", b"null", b"[]",
          b'{"room_id":"x","private":"yes"}', b"a=" + b"%" * 100, b"{" * 3000, b"x" * 20_000,
          b'{"username":"\u0000","password":"12345678"}', b"grant_type=client_credentials&username=a&password=b"]


def http_garbage(rng, n, token):
    out = []
    for i in range(n):
        kind = i % 8
        method = rng.choice(["GET", "POST", "PUT", "DELETE"])
        path = rng.choice(PATHS)
        headers = [("Host", "127.0.0.1")]
        body = b""
        if kind == 0:
            method, label = rng.choice(METHODS), "bad_method"
        elif kind == 1:
            path, label = rng.choice(BAD_PATHS), "bad_path"
        elif kind == 2:
            label = "bad_headers"
            headers += rng.sample([("Authorization", "Bearer " + "x" * rng.randint(0, 9000)),
                                   ("Authorization", "Basic Zm9vOmJhcg=="), ("Authorization", "Bearer a.b.c"),
                                   ("Authorization", f"Bearer {token}x"), ("Content-Length", "-1"),
                                   ("Content-Length", "abc"), ("Transfer-Encoding", "chunked, gzip"),
                                   ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Origin", "null"),
                                   ("Sec-WebSocket-Protocol", "bearer, " + "y" * 5000), ("X-" + "h" * 300, "v"),
                                   ("Cookie", "a=" + "b" * 7000), ("Expect", "100-continue"),
                                   ("Host", ""), ("Content-Type", "application/json")], k=rng.randint(1, 4))
        elif kind == 3:
            label, method = "wrong_content_type", "POST"
            path = rng.choice(["/users/", "/token", "/rooms", "/logout"])
            headers.append(("Content-Type", rng.choice(CONTENT_TYPES)))
            body = rng.choice(BODIES)
        elif kind == 4:
            label, method = "bad_body", rng.choice(["POST", "PUT"])
            path = rng.choice(["/users/", "/token", "/rooms", "/rooms/lobby/members/alice"])
            headers.append(("Content-Type", rng.choice(["application/json", "application/x-www-form-urlencoded"])))
            body = rng.choice(BODIES)
        elif kind == 5:
            label, method = "truncated_body", "POST"
            path = rng.choice(["/users/", "/token", "/rooms"])
            headers.append(("Content-Type", "application/json"))
            body = b'{"username":"ab'
            headers.append(("Content-Length", str(len(body) + rng.randint(1, 500))))
        elif kind == 6:
            label = "bad_version"
        else:
            label, method = "authed_garbage", rng.choice(["GET", "POST", "PUT", "DELETE"])
            headers.append(("Authorization", f"Bearer {token}"))
            path = rng.choice(PATHS + BAD_PATHS)
            headers.append(("Content-Type", rng.choice(CONTENT_TYPES)))
            body = rng.choice(BODIES)
        if body and kind != 5 and not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        version = rng.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "HTTP/1.1 x", ""]) if kind == 6 \
            else "HTTP/1.1"
        head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        raw = head.encode("utf-8", "surrogateescape") + b"Connection: close\r\n\r\n" + body
        out.append((label, raw, kind == 5))
    rng.shuffle(out)
    return out


def send_raw(port, raw, truncated):
    """(status, whether the answer is the Worker's own) for the answer; status None when the
    connection ended without one, "timeout" when none came. The Worker's answers (errors included)
    all carry `X-Content-Type-Options: nosniff`; answers without it come from the runtime or the
    dev proxy before the request reached the Worker."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(raw)
        if truncated:
            # The rest of the body never comes: wait for the server's answer (or its timeout)
            # without half-closing.
            s.settimeout(3)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            if not data:
                return "timeout", False
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    parts = head.split("\r\n", 1)[0].split(" ")
    ours = "x-content-type-options: nosniff" in head.lower()
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        return int(parts[1]), ours
    return None, False


async def fuzz_http(server, n, rng, stats, token):
    items = http_garbage(rng, n, token)
    sem = asyncio.Semaphore(8)

    async def one(label, raw, truncated):
        async with sem:
            try:
                status, ours = await asyncio.to_thread(send_raw, server.port, raw, truncated)
            except OSError as e:
                status, ours = f"error {e.__class__.__name__}", False
        stats["requests"] += 1
        key = str(status) if ours or not isinstance(status, int) else f"{status} (runtime)"
        stats["statuses"][key] = stats["statuses"].get(key, 0) + 1
        if isinstance(status, int) and status >= 500:
            stats["http_5xx"] += 1
            if ours:
                stats["http_5xx_worker"] += 1
                stats["findings"].append(f"http {label}: {status} from the Worker for {raw[:300]!r}")
            else:
                stats["http_5xx_runtime"] += 1
                samples = stats["runtime_5xx_samples"]
                if len(samples) < 12:
                    samples.append(f"{status} {label}: {raw[:140]!r}")
        elif status is None and not truncated:
            stats["no_status"] += 1
            stats["findings"].append(f"http {label}: no status line for {raw[:160]!r}")

    await asyncio.gather(*(one(*item) for item in items))


async def main():
    p = chat.server_arguments(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2400)
    p.add_argument("--requests", type=int, default=2400)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    stats = dict(frames=0, error_frames=0, accepted=0, closed_1007=0, utf8_replaced=0, sockets_lost=0, no_answer=0, broadcast=0,
                 requests=0, http_5xx=0, http_5xx_worker=0, http_5xx_runtime=0, runtime_5xx_samples=[], no_status=0, statuses={}, server_exited=False, findings=[])
    server = chat.Server.from_args(args)
    started = time.time()
    try:
        await asyncio.to_thread(server.start)
        await fuzz_frames(server.url, args.frames, rng, stats)
        token = chat.signup_and_login(server.url, chat.name("fuzzh"))
        await fuzz_http(server, args.requests, rng, stats, token)
        stats["server_exited"] = server.proc.poll() is not None
        status, _ = chat.request(server.url, "GET", "/healthz") if not stats["server_exited"] else (None, None)
        if status != 200:
            stats["findings"].append(f"after the fuzzing /healthz answers {status}")
        with open(server.log_path, errors="replace") as f:
            log = f.read()
        # workerd's own failures on requests it cannot turn into a Request (an absolute-form or `*`
        # target, an empty Host, ...) are logged as "Uncaught exception: kj/...": the runtime's.
        stats["runtime_uncaught_in_log"] = log.count("Uncaught exception: kj/")
        # A client that hangs up in the middle of its body: reading it fails in the runtime with
        # "Network connection lost" and the dev proxy logs a 503 nobody receives; a plain JS Worker
        # reading `request.text()` gets the same.
        lost = "Uncaught Error: Network connection lost."
        stats["client_hung_up_mid_body_in_log"] = log.count(lost)
        log = log.replace(lost, "")
        for needle in ("panicked", "RuntimeError: unreachable", "Uncaught Error", "Uncaught TypeError"):
            at = log.find(needle)
            if at >= 0:
                stats["findings"].append(f"server log contains {needle!r}: {log[max(0, at - 200):at + 300]!r}")
    finally:
        server.stop()
    findings = stats.pop("findings")
    stats.update(seed=seed, seconds=round(time.time() - started, 1), findings=len(findings))
    for f in findings[:int(os.environ.get('FUZZ_SHOW', 40))]:
        print("FINDING", f)
    print(f"frames {stats['frames']}: error frames {stats['error_frames']}, runtime 1007 closes "
          f"{stats['closed_1007']}, invalid UTF-8 decoded as U+FFFD by the runtime {stats['utf8_replaced']}, accepted {stats['accepted']}, sockets lost {stats['sockets_lost']}, "
          f"unanswered {stats['no_answer']}, broadcast {stats['broadcast']}")
    for sample in stats.pop("runtime_5xx_samples"):
        print("runtime 5xx (not the Worker's):", sample)
    print(f"HTTP requests {stats['requests']}: 5xx {stats['http_5xx']} (from the Worker {stats['http_5xx_worker']}, "
          f"from the runtime before the Worker {stats['http_5xx_runtime']}), no status line {stats['no_status']}, "
          f"statuses {json.dumps(dict(sorted(stats['statuses'].items())))}")
    print(json.dumps(stats))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
