"""kill -9 durability: what a sender saw acknowledged (its own message echoed back) survives a
SIGKILL of the Worker's workerd, exactly once, and so does a logout that answered 200.

One cycle: senders in several rooms send as fast as their window allows; a badge is logged out; at a
random moment the Worker's workerd gets SIGKILL; wrangler dev is stopped and started again on the
same --persist-to folder. Then, per room: every acknowledged message is in the history once with the
id its echo had, no content twice, ids increasing and never given to another message; a socket
reconnecting with `since` (the last id its sender saw) and one with `rev` get exactly the room's
messages after that point; every badge whose logout answered 200 is refused (401).
Run by bench/crash.sh, which prepares the server; prints a summary and one JSON line.
"""

import asyncio
import json
import os
import random
import sys
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chat  # noqa: E402


class Room:
    def __init__(self, name):
        self.name = name
        self.by_id = {}  # id -> content, over every cycle: an id is never given to another message
        self.acked = {}  # content -> id, from the senders' echoes


async def sender(url, room, token, tag, window, stop, stats):
    """Sends `tag|seq` messages with at most `window` unacknowledged; records each echo of its own.
    Returns the last id it saw in the room (its `since` for the next cycle)."""
    last_id = None
    sent = 0
    try:
        async with websockets.connect(f"{url.replace('http', 'ws', 1)}/ws/{room.name}?token={token}",
                                      max_size=2**22, open_timeout=20, close_timeout=1) as ws:
            inflight = set()
            while True:
                while not stop.is_set() and len(inflight) < window:
                    content = f"{tag}|{sent}"
                    await ws.send(json.dumps({"content": content, "room_id": room.name}))
                    inflight.add(content)
                    sent += 1
                    stats["sent"] += 1
                if stop.is_set() and not inflight:
                    break
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame.get("type") == "message":
                    last_id = frame["id"]
                    if frame["content"] in inflight:
                        inflight.discard(frame["content"])
                        room.acked[frame["content"]] = frame["id"]
                        stats["acked"] += 1
                elif frame.get("type") == "history" and frame["messages"]:
                    last_id = frame["messages"][-1]["id"]
    except (websockets.ConnectionClosed, OSError, asyncio.TimeoutError):
        pass  # the kill: whatever was not echoed was not acknowledged
    return last_id


def catch_up_matches(frame, got, want):
    """Whether a history frame's ids are exactly the room's `want`: all of them, or, when the frame
    says `truncated` (more than the server sends at once), the newest ones, without a gap."""
    if frame["truncated"]:
        return 0 < len(got) < len(want) and got == want[-len(got):]
    return got == want


async def first_history(url, room, token, query):
    async with websockets.connect(f"{url.replace('http', 'ws', 1)}/ws/{room}?token={token}&{query}",
                                  max_size=2**24, open_timeout=20) as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert frame["type"] == "history", frame
        return frame


async def cycle(n, server, rooms, tokens, args, revoked, findings, stats):
    stop = asyncio.Event()
    tasks = []
    for r, room in enumerate(rooms):
        for s in range(args.senders):
            tag = f"k{n}r{r}s{s}"
            tasks.append(asyncio.create_task(
                sender(server.url, room, tokens[(r * args.senders + s) % len(tokens)], tag, args.window, stop, stats)))
    # A logout during the burst: a badge of its own, answered 200 before the kill.
    victim = await asyncio.to_thread(chat.login, server.url, args.victim)
    status, _ = await asyncio.to_thread(chat.request, server.url, "POST", "/logout", None, chat.bearer(victim))
    if status == 200:
        revoked.append(victim)
    await asyncio.sleep(random.uniform(args.min_wait, args.max_wait))
    pid = server.kill9()
    t_kill = time.time()
    stop.set()
    lasts = await asyncio.gather(*tasks)
    await asyncio.to_thread(server.restart, True)
    stats["kills"] += 1
    restarted_in = time.time() - t_kill

    reader = tokens[0]
    for r, room in enumerate(rooms):
        history = await asyncio.to_thread(chat.all_messages, server.url, room.name, reader)
        ids = [m["id"] for m in history]
        if ids != sorted(set(ids)):
            findings.append(f"cycle {n} {room.name}: ids not increasing/unique")
        contents = {}
        for m in history:
            contents[m["content"]] = contents.get(m["content"], 0) + 1
            seen = room.by_id.setdefault(m["id"], m["content"])
            if seen != m["content"]:
                findings.append(f"cycle {n} {room.name}: id {m['id']} reused ({seen!r} then {m['content']!r})")
                stats["reused"] += 1
        stats["duplicated"] += sum(c - 1 for c in contents.values() if c > 1)
        for content, mid in room.acked.items():
            if contents.get(content, 0) == 0:
                findings.append(f"cycle {n} {room.name}: acknowledged {content!r} (id {mid}) lost")
                stats["lost"] += 1
            elif room.by_id.get(mid) != content:
                findings.append(f"cycle {n} {room.name}: {content!r} acknowledged as id {mid}, stored otherwise")
                stats["lost"] += 1
        # Reconnecting clients: since = the last id a sender of this room saw; rev = a random stored message's.
        since = max([x for x in lasts[r * args.senders:(r + 1) * args.senders] if x is not None], default=0)
        frame = await first_history(server.url, room.name, reader, f"since={since}")
        want = [m["id"] for m in history if m["id"] > since]
        got = [m["id"] for m in frame["messages"]]
        if not catch_up_matches(frame, got, want):
            findings.append(f"cycle {n} {room.name}: since={since} gave {len(got)} ids, the room has {len(want)} after it")
            stats["since_mismatch"] += 1
        if history:
            pick = random.choice(history)
            frame = await first_history(server.url, room.name, reader, f"rev={pick['rev']}")
            want = [m["id"] for m in history if m["rev"] > pick["rev"]]
            got = [m["id"] for m in frame["messages"] if m.get("type", "message") == "message"]
            if not catch_up_matches(frame, got, want):
                findings.append(f"cycle {n} {room.name}: rev={pick['rev']} gave {len(got)} ids, want {len(want)}")
                stats["rev_mismatch"] += 1
    for badge in revoked:
        status, _ = await asyncio.to_thread(chat.request, server.url, "GET", "/rooms/lobby", None, chat.bearer(badge))
        if status != 401:
            findings.append(f"cycle {n}: a badge logged out with 200 answers {status} after the kill")
            stats["revocations_lost"] += 1
    print(f"cycle {n}: killed workerd {pid}, restarted in {restarted_in:.1f} s; acked so far {stats['acked']}, "
          f"lost {stats['lost']}, duplicated {stats['duplicated']}", file=sys.stderr, flush=True)


async def main():
    p = chat.server_arguments(__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--rooms", type=int, default=3)
    p.add_argument("--senders", type=int, default=3, help="per room")
    p.add_argument("--window", type=int, default=4, help="unacknowledged messages per sender")
    p.add_argument("--min-wait", type=float, default=0.3, help="seconds of burst before the kill, at least")
    p.add_argument("--max-wait", type=float, default=2.5)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)

    server = chat.Server.from_args(args)
    stats = dict(kills=0, sent=0, acked=0, lost=0, duplicated=0, reused=0, since_mismatch=0, rev_mismatch=0,
                 revocations_lost=0, revocations=0)
    findings, revoked = [], []
    started = time.time()
    try:
        await asyncio.to_thread(server.start)
        users = [chat.name("crash") for _ in range(max(1, min(args.rooms * args.senders, 20)))]
        tokens = [await asyncio.to_thread(chat.signup_and_login, server.url, u) for u in users]
        args.victim = chat.name("victim")
        await asyncio.to_thread(chat.signup_and_login, server.url, args.victim)
        rooms = [Room(chat.name("crash-")) for _ in range(args.rooms)]
        for n in range(1, args.kills + 1):
            await cycle(n, server, rooms, tokens, args, revoked, findings, stats)
        stats["revocations"] = len(revoked)
    finally:
        server.stop()
    stats.update(seed=seed, seconds=round(time.time() - started, 1), rooms=args.rooms,
                 senders_per_room=args.senders, window=args.window)
    for f in findings[:50]:
        print("FINDING", f)
    print(f"{stats['kills']} kills, {stats['acked']} acknowledged of {stats['sent']} sent: lost {stats['lost']}, "
          f"duplicated {stats['duplicated']}, ids reused {stats['reused']}, since mismatches "
          f"{stats['since_mismatch']}, rev mismatches {stats['rev_mismatch']}, logouts kept "
          f"{stats['revocations'] - stats['revocations_lost']}/{stats['revocations']}")
    print(json.dumps(stats))
    return 0 if not findings else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
