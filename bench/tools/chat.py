"""What bench/tools/crash.py, soak.py and fuzz.py share: one `wrangler dev` of Clubhouse in its own
process group (started, SIGKILLed, restarted on the same state folder), and a small HTTP client.

The server is the snapshot `bench/lib.sh` prepares (`prepare_clubhouse`): a config folder with the
built Worker and a state folder with D1 migrated. Everything a Server starts is in one process group,
stopped by that group's id; nothing is ever killed by name.
"""

import argparse
import http.client
import json
import os
import re
import random
import shutil
import signal
import socket
import string
import subprocess
import time
import urllib.parse


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_pids(pgid):
    """(pid, comm, cmdline) of every process in the process group."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            found.append((int(entry), comm, cmd))
        except (OSError, ValueError):
            continue
    return found


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


WASM32_RESERVATION = 4 << 30  # V8 reserves a memory32's whole 4 GiB address range and commits it as it grows


def wasm_kib(pid):
    """Resident KiB of the isolate's WebAssembly linear memory (the Worker's Rust heap and statics):
    the read-write start of an anonymous 4 GiB reservation (read-write part + inaccessible rest).
    Linear memory never shrinks, so its size is the Rust side's high-water mark; the rest of the
    process (V8's JS heap, the runtime's native allocations, SQLite) is VmRSS minus this."""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    maps, current = [], None
    for line in lines:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)", line)
        if m:
            current = dict(start=int(m[1], 16), end=int(m[2], 16), perms=m[3], anon=m[4] == "0", rss=0)
            maps.append(current)
        elif line.startswith("Rss:") and current is not None:
            current["rss"] = int(line.split()[1])
    total = 0
    for rw, rest in zip(maps, maps[1:]):
        if (rw["perms"].startswith("rw") and rest["perms"] == "---p" and rw["anon"] and rest["anon"]
                and rw["end"] == rest["start"] and rest["end"] - rw["start"] == WASM32_RESERVATION):
            total += rw["rss"]
    return total


def server_arguments(description):
    """A parser with the options of a tool that runs its own server (bench/lib.sh prepares them):
    `Server.from_args` reads them."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--wrangler", required=True)
    p.add_argument("--cfgdir", required=True)
    p.add_argument("--state", required=True, help="migrated state folder to start from (copied)")
    p.add_argument("--work", required=True)
    p.add_argument("--var", action="append", default=[])
    return p


class Server:
    """`wrangler dev` on the prepared config, with `--persist-to` a folder of its own that survives
    restarts."""

    @classmethod
    def from_args(cls, args):
        return cls(args.wrangler, args.cfgdir, args.state, args.work, args.var)

    def __init__(self, wrangler, cfgdir, state_from, work, variables):
        self.wrangler, self.cfgdir, self.work = wrangler, cfgdir, work
        self.state = os.path.join(work, "state.run")
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.copytree(state_from, self.state)
        self.variables = variables
        self.proc = None
        self.port = None
        self.starts = 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=120, ready_path="/healthz"):
        """Starts wrangler dev and waits until `ready_path` answers 200 (None: until anything answers,
        for a server without a health route)."""
        self.port, inspector = free_port(), free_port()
        self.starts += 1
        self.log_path = os.path.join(self.work, f"wrangler.{self.starts}.log")
        args = [self.wrangler, "dev", "--config", os.path.join(self.cfgdir, "wrangler.toml"),
                "--ip", "127.0.0.1", "--port", str(self.port), "--inspector-port", str(inspector),
                "--persist-to", self.state, "--show-interactive-dev-session=false"]
        for kv in self.variables:
            args += ["--var", kv]
        env = dict(os.environ, CI="true", CLOUDFLARE_CF_FETCH_ENABLED="false",
                   WRANGLER_SEND_METRICS="false", X_LOCAL_EXPLORER="false", NO_COLOR="1")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=self.cfgdir, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wrangler dev exited; see {self.log_path}")
            try:
                status, _ = request(self.url, "GET", ready_path or "/", timeout=3)
                if status == 200 or ready_path is None:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"wrangler dev did not answer in {timeout} s; see {self.log_path}")

    def worker_pid(self):
        """The workerd process that runs the Worker and its Durable Objects (the group's other
        workerd is the dev proxy in front, listening on the public port)."""
        workerds = [(p, cmd) for p, comm, cmd in group_pids(self.proc.pid) if comm == "workerd"]
        inner = [p for p, cmd in workerds if f"entry=127.0.0.1:{self.port}" not in cmd]
        return inner[0] if inner else (workerds[0][0] if workerds else None)

    def kill9(self):
        """SIGKILL to the Worker's workerd (a crash, not a stop); returns its pid."""
        pid = self.worker_pid()
        if pid is None:
            raise RuntimeError("no workerd in the server's process group")
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, crashed=False):
        """TERM to the group, then KILL; after a crash, KILL at once (what is left of a group whose
        workerd died is of no use, and wrangler takes seconds to give up on it)."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        signals = ((signal.SIGKILL, 5),) if crashed else ((signal.SIGTERM, 8), (signal.SIGKILL, 5))
        for sig, wait in signals:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + wait
            while time.time() < deadline and group_pids(pgid):
                time.sleep(0.1)
        self.proc.wait()
        self.proc = None

    def restart(self, crashed=False):
        self.stop(crashed)
        self.start()


def request(base, method, path, body=None, headers=None, timeout=30):
    """One HTTP request; (status, parsed JSON or raw text)."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


def name(prefix, n=8):
    return prefix + "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


PASSWORD = "bench-password-123"


def signup_and_login(base, username):
    status, body = request(base, "POST", "/users/", json.dumps({"username": username, "password": PASSWORD}),
                           {"Content-Type": "application/json"})
    if status not in (201, 409):
        raise RuntimeError(f"signup {username}: {status} {body}")
    return login(base, username)


def login(base, username):
    form = urllib.parse.urlencode({"username": username, "password": PASSWORD})
    status, body = request(base, "POST", "/token", form, {"Content-Type": "application/x-www-form-urlencoded"})
    if status != 200:
        raise RuntimeError(f"login {username}: {status} {body}")
    return body["access_token"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def all_messages(base, room, token):
    """Every stored message of the room, oldest first, over GET /rooms/{room}/messages."""
    pages, before = [], None
    while True:
        q = "?limit=100" + (f"&before={before}" if before is not None else "")
        status, body = request(base, "GET", f"/rooms/{room}/messages{q}", headers=bearer(token))
        if status != 200:
            raise RuntimeError(f"messages of {room}: {status} {body}")
        pages.append(body["messages"])
        if not body["has_more"] or not body["messages"]:
            break
        before = body["messages"][0]["id"]
    return [m for page in reversed(pages) for m in page]
