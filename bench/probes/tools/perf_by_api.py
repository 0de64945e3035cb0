#!/usr/bin/env python3
"""Splits a `perf script` dump of the Worker's workerd process by where each sample was spent.

    python3 bench/probes/tools/perf_by_api.py PERF_SCRIPT_TXT HZ UNITS [UNIT_NAME] [--innermost]

Each sample is put under the outermost workerd runtime API its stack passes through (what the
Worker's or an object's code called: `Fetcher::fetch` is a subrequest, `SqlStorage::exec` a SQL
statement...); else under the isolate (JS and WASM code, or V8 working for it) when the stack
passes through JIT code; else under a coarse native category (HTTP plumbing, GC, WASM compiling,
SQLite commits). With the sampling rate and the number of units of work in the window (say,
connections opened) it prints milliseconds of CPU per unit, in total and per bucket.

With --innermost a sample goes under the innermost API on its stack instead: what an event handler
called inside the event (a send, a statement) rather than the event itself. That compares two
servers whose calls run inside different events (the baseline sends inside the message's event,
Clubhouse in `sync()`'s answer).
"""
import collections
import re
import sys

API = re.compile(r"workerd::api::[A-Za-z_:]+?::[A-Za-z_]+")
# Frames that are the JS-to-native trampolines themselves, not an API.
TRAMPOLINES = ("MethodCallback", "ServiceWorkerGlobalScope::queueMicrotask", "WrappableFunctionImpl")
NATIVE = [
    ("wasm compile", r"wasm::.*Compil|GenerateWasmCode|Turboshaft"),
    ("gc", r"GCJob|Scavenge|MarkCompact|Heap::Collect|MinorGC|MajorGC|ConcurrentMarking"),
    ("sqlite commit", r"vdbeCommit|sqlite3PagerCommit|xSync|fsync"),
    ("sqlite", r"sqlite3"),
    ("actor start", r"ActorContainer::start\b"),
    ("websocket plumbing", r"WebSocket.*pump|pumpTo|WebSocketPipe|kj::.*WebSocket"),
    ("http plumbing", r"kj::.*Http"),
]


def samples(path):
    """Stacks (leaf first) of the samples in a `perf script` dump."""
    stack = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if stack:
                    yield stack
                stack = []
            elif line[0] in " \t":
                parts = line.strip().split(" ", 1)
                stack.append(parts[1] if len(parts) > 1 else "?")
    if stack:
        yield stack


def is_jit(frame):
    """JIT code: V8 names it `[JIT] tid N` or maps it through /tmp/perf-PID.map."""
    return "[JIT]" in frame or "/perf-" in frame


def bucket(stack, innermost=False):
    for frame in (stack if innermost else reversed(stack)):  # leaf first, or root first
        m = API.search(frame)
        if m and not any(t in frame for t in TRAMPOLINES):
            return m.group(0).replace("workerd::api::", "api ")
    text = "\n".join(stack)
    for name, pattern in NATIVE[:2]:  # wasm compile, gc: wherever they were triggered from
        if re.search(pattern, text):
            return "native: " + name
    # Running in the isolate (the Worker's JS and WASM, or V8 working for them: ICs, strings,
    # allocation) and not inside a runtime API call.
    if is_jit(stack[0]):
        return "isolate: JS and WASM code"
    if any(is_jit(frame) for frame in stack):
        return "isolate: V8 runtime under JS"
    for name, pattern in NATIVE[2:]:
        if re.search(pattern, text):
            return "native: " + name
    return "native: other"


def main():
    args = [a for a in sys.argv[1:] if a != "--innermost"]
    innermost = len(args) < len(sys.argv) - 1
    path, hz, units = args[0], float(args[1]), float(args[2])
    unit = args[3] if len(args) > 3 else "unit"
    counts = collections.Counter(bucket(s, innermost) for s in samples(path))
    total = sum(counts.values())
    if not total or not units:
        sys.exit("no samples or no units of work")
    per_sample_ms = 1000.0 / hz
    print(f"{total} samples at {hz:g} Hz = {total * per_sample_ms:.0f} ms of CPU over {units:g} "
          f"{unit}s: {total * per_sample_ms / units:.3f} ms per {unit}")
    for name, n in counts.most_common(24 if innermost else 18):
        print(f"  {n * per_sample_ms / units:7.3f} ms  {100 * n / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
