"""A long soak with churn: many sockets over many rooms for a long time, with sockets coming and
going, logouts, private-room membership changes and a steady stream of messages.

Every socket checks what it receives: ids of its room arrive in order, none twice, none skipped from
the first one after its history to the last one it saw (for sockets still open at the end: to the
room's last message). `expected` counts those ids, `delivered` the ones that came, `lost` the
difference, `duplicated` ids seen twice. Latency is from send to each delivery (one clock: this
process). Every server-initiated close must be announced by a `closing` frame and arrive within 2 s
of the logout or removal. The Worker's workerd RSS is sampled every minute.
With --baseline the server is the JavaScript baseline (../shared/peers/js-do): the same steady load
and churn, without what it lacks (history on join, private rooms, logout), so the two memory curves
can be set side by side; a socket's first expected id is then the first one it receives.
Run by bench/soak.sh, which prepares the server; prints a summary and one JSON line.
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


class Totals:
    def __init__(self):
        self.expected = self.delivered = self.duplicated = self.out_of_order = 0
        self.sent = self.acked = self.unacked_closed = 0
        self.latencies = []
        self.server_closes = self.closes_announced = self.closes_late = 0
        self.opened = self.open_failures = self.churned = 0


class Sock:
    def __init__(self, soak, user, room):
        self.soak, self.user, self.room = soak, user, room
        self.ws = None
        self.first = None  # first id this socket must receive live
        self.seen = set()
        self.last = None
        self.closing = None  # the closing frame, if one came
        self.closing_at = None
        self.closed = asyncio.Event()
        self.pending = {}  # content -> send time, for messages this socket sent

    async def open(self):
        token = self.soak.tokens[self.user]
        url = f"{self.soak.ws_base}/ws/{self.room}?token={token}"
        self.ws = await websockets.connect(url, max_size=2**22, open_timeout=30, close_timeout=2,
                                           ping_interval=None)
        self.token = token
        if not self.soak.args.baseline:
            history = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            assert history["type"] == "history", history
            msgs = history["messages"]
            self.first = (msgs[-1]["id"] + 1) if msgs else 1
        self.soak.totals.opened += 1
        self.task = asyncio.create_task(self.read())

    async def read(self):
        t = self.soak.totals
        try:
            async for raw in self.ws:
                if raw == "pong":
                    continue
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "message":
                    mid = frame["id"]
                    if self.first is None:
                        self.first = mid
                    if mid in self.seen:
                        t.duplicated += 1
                        continue
                    if self.last is not None and mid < self.last:
                        t.out_of_order += 1
                    self.seen.add(mid)
                    self.last = mid if self.last is None else max(self.last, mid)
                    content = frame["content"]
                    sent_at = float(content.split("|")[1])
                    t.latencies.append(time.time() - sent_at)
                    if content in self.pending:
                        del self.pending[content]
                        t.acked += 1
                        self.soak.room_max[self.room] = max(self.soak.room_max.get(self.room, 0), mid)
                elif kind == "closing":
                    self.closing, self.closing_at = frame, time.time()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def settle(self, until=None):
        """Adds this socket's lifetime to the totals: ids from `first` to the last seen (or `until`)."""
        t = self.soak.totals
        top = until if until is not None else self.last
        if top is not None and self.first is not None and top >= self.first:
            t.expected += top - self.first + 1
            t.delivered += sum(1 for i in self.seen if self.first <= i <= top)
        t.unacked_closed += len(self.pending)

    async def send(self):
        content = f"soak|{time.time():.6f}|{random.random():.8f}"
        self.pending[content] = time.time()
        self.soak.totals.sent += 1
        await self.ws.send(json.dumps({"content": content, "room_id": self.room}))

    async def close(self):
        await self.ws.close()
        await self.closed.wait()


class Soak:
    def __init__(self, args, server):
        self.args, self.server = args, server
        self.ws_base = server.url.replace("http", "ws", 1)
        self.totals = Totals()
        self.room_max = {}
        self.socks = []
        self.rss = []  # (minute, stored messages so far, RSS KiB)

    async def login(self, user):
        self.tokens[user] = await asyncio.to_thread(chat.login, self.server.url, user)

    async def open_sock(self, user, room):
        s = Sock(self, user, room)
        try:
            await s.open()
        except Exception:  # noqa: BLE001 (a refused or failed connect is counted, the soak goes on)
            self.totals.open_failures += 1
            return None
        self.socks.append(s)
        return s

    async def setup(self):
        a = self.args
        self.users = [chat.name("soak") for _ in range(a.users)]
        self.tokens = {}
        for u in self.users:
            self.tokens[u] = await asyncio.to_thread(chat.signup_and_login, self.server.url, u)
        self.rooms = [chat.name("soak-") for _ in range(a.rooms)]
        self.owner = self.users[0]
        self.private = self.rooms[: a.private_rooms]
        for room in self.private:
            status, body = await asyncio.to_thread(
                chat.request, self.server.url, "POST", "/rooms", json.dumps({"room_id": room, "private": True}),
                {**chat.bearer(self.tokens[self.owner]), "Content-Type": "application/json"})
            assert status == 201, (status, body)
            for u in self.users[1:]:
                await self.member(room, u, "PUT")
        sem = asyncio.Semaphore(20)

        async def one(i):
            async with sem:
                await self.open_sock(self.users[i % len(self.users)], self.rooms[i % len(self.rooms)])

        await asyncio.gather(*(one(i) for i in range(a.sockets)))

    async def member(self, room, user, method):
        status, body = await asyncio.to_thread(chat.request, self.server.url, method,
                                               f"/rooms/{room}/members/{user}", None,
                                               chat.bearer(self.tokens[self.owner]))
        assert status == 200, (method, room, user, status, body)

    def live(self):
        return [s for s in self.socks if not s.closed.is_set()]

    async def drop(self, socks):
        for s in socks:
            if s in self.socks:
                self.socks.remove(s)
                s.settle()

    async def expect_server_close(self, socks, reason, started):
        """Waits for `socks` to be closed by the server; counts closes announced and late."""
        t = self.totals
        if socks:
            await asyncio.wait([asyncio.create_task(s.closed.wait()) for s in socks], timeout=5)
        for s in socks:
            t.server_closes += 1
            if s.closing and s.closing.get("reason") == reason:
                t.closes_announced += 1
            # Told within 2 s: the closing frame (the close frame follows it at once; when the
            # client library reports the close depends on the runtime, see docs/runtime).
            if s.closing_at is None or s.closing_at - started > 2:
                t.closes_late += 1
        await self.drop(socks)
        return time.time() - started

    async def logout_one(self):
        user = random.choice(self.users[1:])
        socks = [s for s in self.live() if s.user == user and s.token == self.tokens[user]]
        started = time.time()
        status, _ = await asyncio.to_thread(chat.request, self.server.url, "POST", "/logout", None,
                                            chat.bearer(self.tokens[user]))
        assert status == 200
        await self.expect_server_close(socks, "token revoked", started)
        await self.login(user)
        for s in socks:
            await self.open_sock(user, s.room)

    async def membership_change(self):
        if not self.private:
            return
        room = random.choice(self.private)
        user = random.choice(self.users[1:])
        socks = [s for s in self.live() if s.user == user and s.room == room]
        started = time.time()
        await self.member(room, user, "DELETE")
        await self.expect_server_close(socks, "removed from room", started)
        await self.member(room, user, "PUT")
        for s in socks:
            await self.open_sock(user, room)

    async def churn(self, fraction):
        live = self.live()
        leaving = random.sample(live, int(len(live) * fraction))
        for s in leaving:
            await s.close()
        await self.drop(leaving)
        for s in leaving:
            await self.open_sock(random.choice(self.users), random.choice(self.rooms))
        self.totals.churned += len(leaving)

    async def sender(self, stop):
        interval = 1.0 / self.args.rate
        next_at = time.time()
        while not stop.is_set():
            live = self.live()
            if live:
                s = random.choice(live)
                try:
                    await s.send()
                except websockets.ConnectionClosed:
                    pass
            next_at += interval
            await asyncio.sleep(max(0, next_at - time.time()))

    def sample_rss(self, minute):
        pid = self.server.worker_pid()
        kib = chat.rss_kib(pid) if pid else None
        wasm = chat.wasm_kib(pid) if pid else None
        self.rss.append((minute, self.totals.acked, kib, wasm))
        print(f"minute {minute}: {len(self.live())} sockets, sent {self.totals.sent}, acked {self.totals.acked}, "
              f"duplicated {self.totals.duplicated}, workerd RSS {kib} KiB (WASM linear memory {wasm} KiB)",
              file=sys.stderr, flush=True)

    async def run(self):
        a = self.args
        await self.setup()
        stop = asyncio.Event()
        senders = [asyncio.create_task(self.sender(stop))]
        started = time.time()
        self.sample_rss(0)
        for minute in range(1, a.minutes + 1):
            minute_end = started + 60 * minute
            # Spread the minute's events over it.
            events = (["churn"] + ["logout"] * a.logouts_per_min + ["member"] * a.member_changes_per_min)
            random.shuffle(events)
            for ev in events:
                await asyncio.sleep(max(0, random.uniform(0, (minute_end - time.time()) / 2)))
                if ev == "churn":
                    await self.churn(a.churn)
                elif ev == "logout":
                    await self.logout_one()
                else:
                    await self.membership_change()
            await asyncio.sleep(max(0, minute_end - time.time()))
            self.sample_rss(minute)
        stop.set()
        await asyncio.gather(*senders)
        await asyncio.sleep(3)  # the last deliveries
        for s in list(self.socks):
            s.settle(until=self.room_max.get(s.room))
        for s in list(self.socks):
            await s.close()

    def report(self):
        t, a = self.totals, self.args
        lat = sorted(t.latencies)

        def pct(p):
            return round(lat[min(len(lat) - 1, int(len(lat) * p))] * 1000, 1) if lat else None
        warm = [r for r in self.rss if r[0] >= min(2, a.minutes) and r[2]]
        growth = wasm_growth = None
        if len(warm) >= 2 and warm[-1][1] > warm[0][1]:
            per_10k = 10_000 / (warm[-1][1] - warm[0][1])
            growth = round((warm[-1][2] - warm[0][2]) * per_10k)
            if warm[-1][3] is not None and warm[0][3] is not None:
                wasm_growth = round((warm[-1][3] - warm[0][3]) * per_10k)
        return dict(sockets=a.sockets, rooms=a.rooms, minutes=a.minutes, rate=a.rate, churn=a.churn,
                    logouts_per_min=a.logouts_per_min, member_changes_per_min=a.member_changes_per_min,
                    expected=t.expected, delivered=t.delivered, lost=t.expected - t.delivered,
                    duplicated=t.duplicated, out_of_order=t.out_of_order, sent=t.sent, acked=t.acked,
                    unacked_on_closed_sockets=t.unacked_closed, p50_ms=pct(0.5), p99_ms=pct(0.99),
                    max_ms=pct(1.0), server_closes=t.server_closes, closes_announced=t.closes_announced,
                    closes_late=t.closes_late, sockets_opened=t.opened, open_failures=t.open_failures,
                    churned=t.churned, rss_kib=[r[2] for r in self.rss],
                    rss_growth_kib_per_10k_messages_after_warmup=growth,
                    wasm_kib=[r[3] for r in self.rss],
                    wasm_growth_kib_per_10k_messages_after_warmup=wasm_growth)


async def main():
    p = chat.server_arguments(__doc__.splitlines()[0])
    p.add_argument("--sockets", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--minutes", type=int, default=30)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--rate", type=float, default=20, help="messages per second, over all rooms")
    p.add_argument("--churn", type=float, default=0.10, help="share of the sockets replaced per minute")
    p.add_argument("--logouts-per-min", type=int, default=2)
    p.add_argument("--member-changes-per-min", type=int, default=2)
    p.add_argument("--private-rooms", type=int, default=2)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--baseline", action="store_true",
                   help="the server is the JS baseline: no history, private rooms, logouts or membership changes")
    args = p.parse_args()
    if args.baseline:
        args.private_rooms = args.logouts_per_min = args.member_changes_per_min = 0
    random.seed(args.seed)
    server = chat.Server.from_args(args)
    try:
        await asyncio.to_thread(server.start, ready_path=None if args.baseline else "/healthz")
        soak = Soak(args, server)
        await soak.run()
    finally:
        server.stop()
    r = soak.report()
    print(f"{r['sockets']} sockets, {r['rooms']} rooms, {r['minutes']} min, {r['rate']} msg/s, churn "
          f"{r['churn']:.0%}/min: delivered {r['delivered']}/{r['expected']}, lost {r['lost']}, duplicated "
          f"{r['duplicated']}, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; server closes {r['server_closes']} "
          f"(announced {r['closes_announced']}, late {r['closes_late']}); RSS KiB per minute {r['rss_kib']}, "
          f"growth per 10k messages after warm-up {r['rss_growth_kib_per_10k_messages_after_warmup']} KiB; "
          f"of which WASM linear memory (KiB per minute {r['wasm_kib']}): "
          f"{r['wasm_growth_kib_per_10k_messages_after_warmup']} KiB")
    print(json.dumps(r))
    bad = r["lost"] or r["duplicated"] or r["closes_late"] or r["closes_announced"] != r["server_closes"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
