// The engine alone in WASM (no Kuzu): the JS core's `write` over an op stream of
// 100,000 entities (50,000 nodes, 50,000 edges) in writes of 1,000 ops, each plan
// confirmed and discarded, as adapters/wasm/benches/host.rs runs the same stream
// natively. Prints the time (median of 3, each on a fresh core) and the WASM module's
// memory after the first run, against the SPEC's 32 MB.
//   node bench/engine.mjs [NODES]      (default 50000)
import fs from "node:fs";
import { initSync, Core, memoryBytes, heapBytes } from "../wasm/kuzu_sync_wasm.js";

const NODES = Number(process.argv[2] ?? 50_000);
const BATCH = 1_000;

/** The op stream, as JSON-line writes; the same lines as the native bench. */
function writes() {
  const out = [
    [
      '{"op":"ddl","cypher":"CREATE NODE TABLE Person(id INT64, name STRING, age INT64, PRIMARY KEY(id))"}',
      '{"op":"ddl","cypher":"CREATE REL TABLE Knows(FROM Person TO Person, since INT64)"}',
    ].join("\n"),
  ];
  let lines = [];
  const flush = () => {
    out.push(lines.join("\n"));
    lines = [];
  };
  for (let i = 0; i < NODES; i++) {
    lines.push(`{"op":"add_node","table":"Person","props":{"id":${i},"name":"person ${i}","age":${i % 90}}}`);
    if (lines.length === BATCH) flush();
  }
  for (let i = 0; i < NODES; i++) {
    lines.push(`{"op":"add_edge","table":"Knows","from":${i},"to":${(i * 7 + 1) % NODES},"props":{"since":${2000 + (i % 20)}}}`);
    if (lines.length === BATCH) flush();
  }
  if (lines.length > 0) flush();
  return out;
}

initSync({ module: fs.readFileSync(new URL("../wasm/kuzu_sync_wasm_bg.wasm", import.meta.url)) });
const stream = writes();
const before = memoryBytes();
const times = [];
let after = 0;
let live = 0;
for (let run = 0; run < 3; run++) {
  const core = Core.open("bench", [], undefined, false, undefined, undefined);
  const t = performance.now();
  for (const lines of stream) {
    core.write(lines, 1_700_000_000_000);
    core.confirm();
  }
  times.push(performance.now() - t);
  const status = JSON.parse(core.status());
  if (status.nodes !== NODES || status.edges !== NODES) throw new Error(`status ${JSON.stringify(status)}`);
  if (run === 0) {
    after = memoryBytes();
    live = heapBytes();
  }
  core.free();
}
const median = [...times].sort((a, b) => a - b)[1];
const mib = (b) => (b / (1 << 20)).toFixed(1);
console.log(
  `${2 * NODES} entities in ${stream.length} writes: ${median.toFixed(0)} ms (median of ${times
    .map((t) => t.toFixed(0))
    .join(", ")}), ${((2 * NODES) / (median / 1000) / 1000).toFixed(0)}k ops/s`,
);
console.log(
  `WASM memory: ${mib(before)} MiB at start, ${mib(after)} MiB after the first run ` +
    `(the engine, its conflicts and the in-memory copy of the log), of which ${mib(live)} MiB ` +
    `live heap; SPEC: 32 MB`,
);
console.log(`(exactly: ${after} bytes of WASM memory, ${live} bytes of live heap)`);
