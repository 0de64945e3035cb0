// The JS heap of a `wrangler dev` Worker isolate, through its inspector port: what is live after a
// full GC, and (with a snapshot) which constructors hold it. Finds out whether memory that grows
// under load is garbage V8 has not collected yet or objects something still references.
//
//   node bench/probes/tools/heap.mjs INSPECTOR_PORT usage            the live heap: a snapshot's total bytes
//   node bench/probes/tools/heap.mjs INSPECTOR_PORT snapshot [TOP]   the same, and the TOP (default 25)
//                                                             constructors by size
// Prints one JSON line per inspector target. A heap snapshot collects garbage first, so what it counts
// is live; workerd's inspector does not answer HeapProfiler.collectGarbage, which is why a snapshot is
// taken even for the total. `used` is V8's heap in use before that collection (Runtime.getHeapUsage),
// counted differently from a snapshot's objects: compare each figure with itself over time.
import { inspectorTargets, openSession } from "./inspector.mjs";

const [port, mode = "usage", top = "25"] = process.argv.slice(2);
if (!port) {
  console.error("usage: heap.mjs INSPECTOR_PORT usage|snapshot [TOP]");
  process.exit(2);
}

// Aggregates a .heapsnapshot by node name (the constructor for objects) and type.
function summarise(snapshot, limit) {
  const meta = snapshot.snapshot.meta;
  const fields = meta.node_fields;
  const types = meta.node_types[0];
  const stride = fields.length;
  const [typeAt, nameAt, sizeAt] = ["type", "name", "self_size"].map((f) => fields.indexOf(f));
  const groups = new Map();
  let total = 0, count = 0;
  for (let i = 0; i < snapshot.nodes.length; i += stride) {
    const type = types[snapshot.nodes[i + typeAt]];
    const name = type === "object" || type === "native" || type === "closure"
      ? snapshot.strings[snapshot.nodes[i + nameAt]] : `(${type})`;
    const key = `${type}:${name}`.slice(0, 100);
    const size = snapshot.nodes[i + sizeAt];
    const g = groups.get(key) || { key, count: 0, bytes: 0 };
    g.count++; g.bytes += size; total += size; count++;
    groups.set(key, g);
  }
  const byBytes = [...groups.values()].sort((a, b) => b.bytes - a.bytes).slice(0, limit);
  return { nodes: count, bytes: total, top: byBytes };
}

for (const target of await inspectorTargets(port)) {
  const chunks = [];
  const { call, close } = await openSession(target, (msg) => {
    if (msg.method === "HeapProfiler.addHeapSnapshotChunk") chunks.push(msg.params.chunk);
  });
  await call("HeapProfiler.enable");
  const usage = (await call("Runtime.getHeapUsage")).result ?? {};
  await call("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
  const summary = summarise(JSON.parse(chunks.join("")), mode === "snapshot" ? Number(top) : 0);
  const out = { title: target.title, used: usage.usedSize, live: summary.bytes, nodes: summary.nodes };
  if (mode === "snapshot") out.top = summary.top;
  console.log(JSON.stringify(out));
  close();
}
