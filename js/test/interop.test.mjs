// Randomized interop through one real hub (`kuzu-sync serve`): a native CLI replica, a JS
// replica on `kuzu` and one on `kuzu-wasm` write at random for several rounds (the same
// keys everywhere, so properties really conflict; counters that sum; node and edge adds
// and deletes), sync one-shot in a random order over random transports, and now and then
// one of them is cut off for a round or two and then rejoins. At the end they sync until
// nothing changes. Checked:
// - after every sync, the replica's version vector and its graph against a model kept
//   here: which ops each side holds (a one-shot sync leaves the replica and the hub each
//   holding the union); the nodes and edges that show by the documented rules (an add
//   survives a delete that had not seen it; a node delete removes the edges it had seen;
//   an edge shows only while both ends exist); each counter, the sum of the increments
//   held;
// - at the end, the canonical dumps (every user table and column, as text) of the three
//   and of the hub are equal, and a node deleted last is gone everywhere.
// Refused ops are counted apart; only "does not exist" for the op's own target, on an
// entity the replica's graph indeed lacks, is tolerated. The seed is printed; rerun one
// with KUZU_SYNC_SEED=N (KUZU_SYNC_ROUNDS=N changes the number of rounds).
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { spawn } from "node:child_process";
import { Replica } from "../index.js";
import { nativeDb, wasmDb, tempDir, cli, freePort, startHub, stopHub } from "./helpers.mjs";

const ROUNDS = Number(process.env.KUZU_SYNC_ROUNDS ?? 7);
const KEYS = ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7"];
const COUNTERS = ["c0", "c1", "c2"];
const NAMES = ["alpha", "Bär", "it's", "x, y", "", "ünïcødé ✓"];
const TAGS = ["a", "b, c", "it's", "[x]", ""];
const ITEM_PROPS = ["name", "score", "big", "tags"];

const SETUP = [
  {
    op: "ddl",
    cypher:
      "CREATE NODE TABLE Item(id STRING, name STRING, score DOUBLE, big INT64, tags STRING[], " +
      "hits INT64, PRIMARY KEY(id))",
  },
  { op: "ddl", cypher: "CREATE NODE TABLE Counter(id STRING, n INT64, PRIMARY KEY(id))" },
  { op: "ddl", cypher: "CREATE REL TABLE Link(FROM Item TO Item, w INT64)" },
  { op: "set_policy", table: "Item", prop: "hits", policy: "counter" },
  { op: "set_policy", table: "Counter", prop: "n", policy: "counter" },
  ...COUNTERS.map((id) => ({ op: "add_node", table: "Counter", props: { id, n: 0 } })),
  ...KEYS.slice(0, 4).map((id) => ({ op: "add_node", table: "Item", props: { id, name: id } })),
];

// ---------------------------------------------------------------- randomness

/** mulberry32: a tiny seeded PRNG. */
function prng(seed) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n) => Math.floor(next() * n);
  return {
    int,
    chance: (p) => next() < p,
    pick: (xs) => xs[int(xs.length)],
    shuffle(xs) {
      const out = xs.slice();
      for (let i = out.length - 1; i > 0; i--) {
        const j = int(i + 1);
        [out[i], out[j]] = [out[j], out[i]];
      }
      return out;
    },
  };
}

function itemValue(rng, prop) {
  if (rng.chance(0.1)) return null;
  switch (prop) {
    case "name":
      return rng.pick(NAMES);
    case "score":
      return rng.int(64) / 4 - 5;
    case "big":
      // Above 2^53 (exact only as text), well inside INT64 (see PEOPLE in helpers.mjs).
      return (rng.chance(0.5) ? 1n : -1n) * ((1n << 60n) + BigInt(rng.int(1_000_000)));
    case "tags":
      return Array.from({ length: rng.int(4) }, () => rng.pick(TAGS));
  }
  throw new Error(prop);
}

/** One random op. Keys come from one small pool on every replica, so they collide. */
function randomOp(rng) {
  const r = rng.int(100);
  const key = rng.pick(KEYS);
  // Edges among fewer keys, mostly with the default edge key: they collide too.
  const ends = KEYS.slice(0, 3);
  const edge = () => ({ table: "Link", from: rng.pick(ends), to: rng.pick(ends), key: rng.pick(["", "", "k1"]) });
  if (r < 14) {
    const props = { id: key };
    for (const p of ITEM_PROPS) if (rng.chance(0.5)) props[p] = itemValue(rng, p);
    if (rng.chance(0.2)) props.hits = rng.int(5);
    return { op: "add_node", table: "Item", props };
  }
  if (r < 38) {
    const prop = rng.pick(ITEM_PROPS);
    return { op: "update", table: "Item", key, prop, value: itemValue(rng, prop) };
  }
  if (r < 50) {
    return { op: "increment", table: "Counter", key: rng.pick(COUNTERS), prop: "n", delta: rng.int(15) - 5 || 7 };
  }
  if (r < 58) return { op: "increment", table: "Item", key, prop: "hits", delta: rng.int(9) - 3 || 1 };
  if (r < 64) return { op: "delete_node", table: "Item", key };
  if (r < 82) {
    const props = rng.chance(0.6) ? { w: rng.int(100) } : {};
    return { op: "add_edge", ...edge(), props };
  }
  if (r < 89) return { op: "update", ...edge(), prop: "w", value: rng.int(100) };
  return { op: "delete_edge", ...edge() };
}

/** A round's ops of one replica, in atomic writes of 1 to 4 ops. */
function randomChunks(rng) {
  const chunks = [];
  let left = 10 + rng.int(9);
  while (left > 0) {
    const n = Math.min(left, 1 + rng.int(4));
    chunks.push(Array.from({ length: n }, () => randomOp(rng)));
    left -= n;
  }
  return chunks;
}

// ---------------------------------------------------------------- the replicas

/** An op as a JSON line for the CLI; bigints become exact JSON integers. */
function jsonLine(op) {
  const marks = [];
  const text = JSON.stringify(op, (_k, v) => {
    if (typeof v !== "bigint") return v;
    marks.push(v.toString());
    return `\u0000bigint${marks.length - 1}`;
  });
  return text.replace(/"\\u0000bigint(\d+)"/g, (_m, n) => marks[Number(n)]);
}

/** Runs the CLI without blocking the event loop (the JS replicas write meanwhile). */
function run(args, input = "") {
  return new Promise((resolve, reject) => {
    const p = spawn(process.env.KUZU_SYNC_BIN, args, { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("error", reject);
    p.on("close", (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`kuzu-sync ${args[0]} exited with ${code}: ${err.trim()}`));
    });
    p.stdin.end(input);
  });
}

const jsonLines = (text) =>
  text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l));

function cliReplica(dir, peer) {
  return {
    name: "cli",
    peer,
    rows: async (cypher) => jsonLines(await run(["query", dir, cypher])),
    async write(ops) {
      const out = JSON.parse(await run(["write", dir], ops.map(jsonLine).join("\n")));
      assert.equal(out.written, ops.length, JSON.stringify(out));
    },
    async sync(url) {
      return jsonLines(await run(["sync", dir, "--remote", url])).filter((e) => e.event === "conflict").length;
    },
    vv: async () => JSON.parse(await run(["status", dir])).version_vector,
    conflicts: async () => jsonLines(await run(["conflicts", dir])),
  };
}

function jsReplica(name, db, replica, events) {
  for (const type of ["conflict", "error"]) {
    replica.addEventListener(type, (e) => events.push({ replica: name, type, detail: e.detail }));
  }
  return {
    name,
    peer: replica.peerId,
    replica,
    rows: (cypher) => db.rows(cypher),
    async write(ops) {
      const out = await replica.write(ops);
      assert.equal(out.ids.length, ops.length, JSON.stringify(out));
    },
    async sync(url) {
      const before = events.length;
      await replica.sync(url);
      return events.slice(before).filter((e) => e.type === "conflict").length;
    },
    vv: async () => (await replica.status()).versionVector,
    conflicts: () => replica.conflicts(),
  };
}

// ---------------------------------------------------------------- reading the graph

const q = (s) => `'${String(s).replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
const alias = (i) => `v${String(i).padStart(2, "0")}`;

/**
 * The canonical dump: every user table with its columns and types, and its rows with
 * every value as `CAST(… AS STRING)` (rel rows with both ends' keys first), sorted.
 */
async function dump(r) {
  const out = {};
  const tables = (await r.rows("CALL show_tables() RETURN *")).filter((t) => !t.name.startsWith("_ks"));
  for (const t of tables.sort((x, y) => (x.name < y.name ? -1 : 1))) {
    const columns = (await r.rows(`CALL table_info('${t.name}') RETURN *`)).map((c) => [c.name, c.type]);
    const exprs = [];
    let match;
    if (t.type === "REL") {
      const conns = await r.rows(`CALL show_connection('${t.name}') RETURN *`);
      assert.equal(conns.length, 1, `${t.name}: one FROM/TO pair`);
      const c = conns[0];
      match = `MATCH (a:${c["source table name"]})-[e:${t.name}]->(b:${c["destination table name"]})`;
      exprs.push(`a.${c["source table primary key"]}`, `b.${c["destination table primary key"]}`);
      for (const [name] of columns) exprs.push(`e.${name}`);
    } else {
      match = `MATCH (e:${t.name})`;
      for (const [name] of columns) exprs.push(`e.${name}`);
    }
    const cypher = `${match} RETURN ${exprs.map((x, i) => `CAST(${x} AS STRING) AS ${alias(i)}`).join(", ")}`;
    const rows = (await r.rows(cypher)).map((row) => JSON.stringify(exprs.map((_x, i) => row[alias(i)] ?? null)));
    out[t.name] = { kind: t.type, columns, rows: rows.sort() };
  }
  return out;
}

async function count(r, cypher) {
  return Number(Object.values((await r.rows(cypher))[0])[0]);
}

const nodeVisible = (r, key) => count(r, `MATCH (n:Item) WHERE n.id = ${q(key)} RETURN count(*) AS c`);
const edgeVisible = (r, e) =>
  count(
    r,
    `MATCH (a:Item)-[e:Link]->(b:Item) WHERE a.id = ${q(e.from)} AND b.id = ${q(e.to)} ` +
      `AND e._ks_eid = ${q(`=${e.key ?? ""}`)} RETURN count(*) AS c`,
  );

// ---------------------------------------------------------------- the model

const edgeId = (o) => `${o.from}->${o.to}#${o.key ?? ""}`;
const isEdgeOp = (o) => o.table === "Link";

/** The messages a refusal of `op` may legitimately carry, and what the replica then lacks. */
function legitimateRefusals(op) {
  const node = (k) => ({ message: `node Item(${k}) does not exist`, lacks: { node: k } });
  if (op.table === "Counter" || op.op === "add_node") return []; // counters and adds always apply
  if (op.op === "add_edge") return [node(op.from), node(op.to)];
  if (isEdgeOp(op)) {
    const label = op.key ? `Link ${JSON.stringify(op.key)}` : "Link";
    return [{ message: `edge Item(${op.from})-[${label}]->Item(${op.to}) does not exist`, lacks: { edge: op } }];
  }
  return [node(op.key)];
}

/** Whether `earlier` (in the same atomic write) may change whether `lacks` exists. */
function touches(earlier, lacks) {
  if (lacks.node !== undefined) {
    return earlier.table === "Item" && (earlier.op === "add_node" || earlier.op === "delete_node");
  }
  const e = lacks.edge;
  if (earlier.op === "delete_node") return earlier.key === e.from || earlier.key === e.to;
  return isEdgeOp(earlier) && edgeId(earlier) === edgeId(e) && earlier.op !== "update";
}

/** Whether a node exists: one of its adds was seen by none of its deletes (add wins). */
function nodeExists(ops, key) {
  const adds = ops.filter((x) => x.op.op === "add_node" && x.op.table === "Item" && x.op.props.id === key);
  const dels = ops.filter((x) => x.op.op === "delete_node" && x.op.key === key);
  return adds.some((add) => dels.every((d) => !d.seen.has(add.id)));
}

const edgeName = (from, to, eid) => `${from}->${to}#${eid.slice(1)}`; // _ks_eid is "=" + the edge key

/**
 * What the rules give for a set of applied ops (each `{id, op, seen}`, `seen` the ids a
 * delete had seen): the items that exist; the edges that show (an add seen by no delete of
 * the edge nor of either end, and both ends exist); each counter, the sum of its increments.
 */
function expectedState(ops) {
  const items = KEYS.filter((k) => nodeExists(ops, k)).sort();
  const edgeIds = new Set(ops.filter((x) => x.op.op === "add_edge").map((x) => edgeId(x.op)));
  const edges = [...edgeIds]
    .filter((id) => {
      const adds = ops.filter((x) => x.op.op === "add_edge" && edgeId(x.op) === id);
      const { from, to } = adds[0].op;
      const dels = ops.filter(
        (x) =>
          (x.op.op === "delete_edge" && edgeId(x.op) === id) ||
          (x.op.op === "delete_node" && (x.op.key === from || x.op.key === to)),
      );
      return items.includes(from) && items.includes(to) && adds.some((add) => dels.every((d) => !d.seen.has(add.id)));
    })
    .sort();
  const counters = {};
  for (const k of COUNTERS) {
    const increments = ops.filter((x) => x.op.op === "increment" && x.op.table === "Counter" && x.op.key === k);
    counters[k] = String(increments.reduce((sum, x) => sum + x.op.delta, 0));
  }
  return { items, edges, counters };
}

/** The same, read from a replica's graph. */
async function stateOf(r) {
  const items = (await r.rows("MATCH (n:Item) RETURN n.id AS id")).map((x) => x.id).sort();
  const edges = (await r.rows("MATCH (a:Item)-[e:Link]->(b:Item) RETURN a.id AS f, b.id AS t, e._ks_eid AS k"))
    .map((x) => edgeName(x.f, x.t, x.k))
    .sort();
  const counters = {};
  for (const x of await r.rows("MATCH (c:Counter) RETURN c.id AS id, CAST(c.n AS STRING) AS n")) counters[x.id] = x.n;
  return { items, edges, counters };
}

const TITLE = "random writes on a CLI, a kuzu and a kuzu-wasm replica converge through one hub";

test(TITLE, { timeout: 300_000 }, async (t) => {
  const seed =
    process.env.KUZU_SYNC_SEED !== undefined
      ? Number(process.env.KUZU_SYNC_SEED) >>> 0
      : (Date.now() ^ (process.pid << 16)) >>> 0;
  console.log(`interop: seed ${seed} (rerun with KUZU_SYNC_SEED=${seed}), ${ROUNDS} rounds`);
  const rng = prng(seed);
  const started = Date.now();

  const hubDir = path.join(tempDir("interop-hub"), "hub");
  cli("init", hubDir, "--peer-id", "hub");
  const port = await freePort();
  const urls = {
    tcp: `tcp://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/sync`,
    http: `http://127.0.0.1:${port}/sync`,
  };
  let hub = await startHub(hubDir, port);
  const hubLog = hub.log;
  const cliDir = path.join(tempDir("interop-cli"), "c");
  cli("init", cliDir, "--peer-id", "cli-1");
  const n = nativeDb();
  const w = await wasmDb();
  const events = [];
  let a;
  let b;
  try {
    a = await Replica.open({ kuzu: n.conn, peerId: "node-1" });
    b = await Replica.open({ kuzu: w.conn, peerId: "wasm-1" });
    const replicas = [
      cliReplica(cliDir, "cli-1"),
      jsReplica("kuzu", n, a, events),
      jsReplica("kuzu-wasm", w, b, events),
    ];
    const [c] = replicas;

    // What each side holds, as sets of the test's own op ids (a one-shot sync leaves the
    // replica and the hub each with the union), and every applied op.
    const hubHolds = new Set();
    for (const r of replicas) r.holds = new Set();
    const applied = [];
    const stats = {
      attempted: 0,
      applied: 0,
      refused: 0,
      refusedChecked: 0,
      syncs: 0,
      syncConflicts: 0,
      partitions: 0,
    };
    const refusedBy = {};

    /** Records ops a replica applied, in order; a delete remembers what it had seen. */
    const record = (r, ops) => {
      for (const op of ops) {
        const id = `${r.peer}#${applied.length}`;
        applied.push({ id, peer: r.peer, op, seen: op.op.startsWith("delete") ? new Set(r.holds) : null });
        r.holds.add(id);
        if (r.offline) r.offlineWrites++;
      }
      stats.applied += ops.length;
    };

    /** Writes one atomic write; a legitimately refused op is dropped and the rest retried. */
    const writeChunk = async (r, ops) => {
      stats.attempted += ops.length;
      let pending = ops;
      while (pending.length > 0) {
        try {
          await r.write(pending);
          record(r, pending);
          return;
        } catch (e) {
          const m = /(?:op|line) (\d+): ((?:node|edge) .+? does not exist)/.exec(e.message);
          const op = m && pending[Number(m[1]) - 1];
          const why = op && legitimateRefusals(op).find((x) => x.message === m[2]);
          if (!why) throw new Error(`${r.name}: ${pending.map(jsonLine).join(" ")} refused: ${e.message}`);
          const i = Number(m[1]) - 1;
          // Nothing earlier in this write changes it: the graph must lack it now.
          if (!pending.slice(0, i).some((x) => touches(x, why.lacks))) {
            const visible =
              why.lacks.node !== undefined ? await nodeVisible(r, why.lacks.node) : await edgeVisible(r, why.lacks.edge);
            assert.equal(visible, 0, `${r.name} refused ${jsonLine(op)} (${m[2]}) but shows it`);
            stats.refusedChecked++;
          }
          stats.refused++;
          refusedBy[op.op] = (refusedBy[op.op] ?? 0) + 1;
          pending = pending.filter((_x, j) => j !== i);
        }
      }
    };

    /** A one-shot sync; then the replica's version vector must be what the model says. */
    let lastSync = "none yet";
    const sync = async (r, transport) => {
      const what = `${r.name}'s one-shot sync over ${transport}`;
      try {
        stats.syncConflicts += await r.sync(urls[transport]);
      } catch (e) {
        throw new Error(`${what} (sync ${stats.syncs + 1}; the one before: ${lastSync}) failed: ${e.message}`);
      }
      lastSync = what;
      stats.syncs++;
      for (const id of r.holds) hubHolds.add(id);
      r.holds = new Set(hubHolds);
      await checkVector(r);
      await checkState(r);
    };
    const checkVector = async (r) => {
      const vv = await r.vv();
      for (const peer of replicas.map((x) => x.peer)) {
        const expected = applied.filter((x) => x.peer === peer && r.holds.has(x.id)).length;
        const why = `${r.name}'s vector ${JSON.stringify(vv)}: ${peer} should be at ${expected}`;
        assert.equal(vv[peer] ?? 0, expected, why);
      }
      return vv;
    };
    // The graph is a function of the ops a replica holds: after every sync, its nodes, edges
    // and counters must be what the rules give for exactly those.
    const checkState = async (r) => {
      const state = await stateOf(r);
      const expected = expectedState(applied.filter((x) => r.holds.has(x.id)));
      assert.deepEqual(state, expected, `${r.name} after ${stats.syncs} syncs`);
    };
    const jsTransport = () => rng.pick(["ws", "ws", "http"]);
    const cliTransport = () => rng.pick(["tcp", "ws", "http"]);
    const transportOf = (r) => (r === c ? cliTransport() : jsTransport());

    // The CLI creates the schema; everyone gets it through the hub.
    await writeChunk(c, SETUP);
    for (const r of replicas) await sync(r, transportOf(r));

    let partition = null; // {r, until}
    for (let round = 0; round < ROUNDS; round++) {
      // Cut one replica off for one or two rounds, now and then (always once, mid-run).
      if (partition && partition.until === round) {
        const r = partition.r;
        if (r.replica) {
          const queue = await r.replica.queueStatus();
          assert.equal(queue.offline, true);
          assert.equal(queue.queued, r.offlineWrites, `${r.name}'s offline queue`);
          await r.replica.goOnline();
        }
        r.offline = false;
        partition = null;
      }
      if (!partition && round < ROUNDS - 2 && (rng.chance(0.35) || (round === 2 && stats.partitions === 0))) {
        partition = { r: rng.pick(replicas), until: round + 1 + rng.int(2) };
        partition.r.offline = true;
        partition.r.offlineWrites = 0;
        if (partition.r.replica) await partition.r.replica.goOffline();
        stats.partitions++;
      }
      // Everyone writes at once (the ops are drawn first, so a seed replays the same ops).
      const plan = replicas.map((r) => ({ r, chunks: randomChunks(rng) }));
      const order = rng.shuffle(replicas).filter((r) => !r.offline);
      const syncs = [...order, ...order.filter(() => rng.chance(0.25))].map((r) => ({ r, transport: transportOf(r) }));
      await Promise.all(plan.map(async ({ r, chunks }) => {
        for (const ops of chunks) await writeChunk(r, ops);
      }));
      for (const s of syncs) await sync(s.r, s.transport);
      t.diagnostic(
        `round ${round}: ${stats.applied} applied, ${stats.refused} refused` +
          (partition ? `, ${partition.r.name} cut off until round ${partition.until}` : ""),
      );
    }
    if (partition?.r.replica) await partition.r.replica.goOnline();
    for (const r of replicas) r.offline = false;

    /** Full passes of syncs until two in a row change no version vector. */
    const quiesce = async () => {
      let last = JSON.stringify(await Promise.all(replicas.map((r) => r.vv())));
      for (let quiet = 0, passes = 0; quiet < 2; passes++) {
        assert.ok(passes < 10, "no quiescence after 10 passes");
        for (const r of replicas) await sync(r, transportOf(r));
        const now = JSON.stringify(await Promise.all(replicas.map((r) => r.vv())));
        quiet = now === last ? quiet + 1 : 0;
        last = now;
      }
    };
    await quiesce();

    // One more delete nobody races: its node must end absent everywhere.
    const exists = (key) => nodeExists(applied, key);
    const deleter = rng.pick(replicas);
    let victim = rng.shuffle(KEYS).find(exists);
    if (victim === undefined) {
      victim = "i0";
      await writeChunk(deleter, [{ op: "add_node", table: "Item", props: { id: victim } }]);
    }
    await writeChunk(deleter, [{ op: "delete_node", table: "Item", key: victim }]);
    assert.equal(exists(victim), false);
    await quiesce();

    // The hub is a replica too: stop it to read its graph.
    await stopHub(hub);
    hub = null;

    // 1. Every replica holds every applied op, and the same graph as the others and the hub.
    const vectors = await Promise.all(replicas.map(checkVector));
    for (const r of replicas) assert.equal(r.holds.size, applied.length, `${r.name} holds every op`);
    assert.deepEqual(vectors[1], vectors[0]);
    assert.deepEqual(vectors[2], vectors[0]);
    const hubReader = { name: "hub", rows: async (cypher) => jsonLines(await run(["query", hubDir, cypher])) };
    const dumps = [];
    for (const r of [...replicas, hubReader]) dumps.push({ name: r.name, dump: await dump(r) });
    for (const d of dumps.slice(1)) assert.deepEqual(d.dump, dumps[0].dump, `${d.name} against ${dumps[0].name}`);
    const reference = dumps[0].dump;
    assert.deepEqual(Object.keys(reference), ["Counter", "Item", "Link"]);

    // 2. Counters are the sum of every increment applied, each once; the nodes and edges
    // that show are what the rules give (checked above after each sync; here on the dump).
    const expected = expectedState(applied);
    const counterRows = Object.fromEntries(reference.Counter.rows.map((row) => JSON.parse(row)));
    assert.deepEqual(counterRows, expected.counters, "the counters");
    const items = reference.Item.rows.map((row) => JSON.parse(row)[0]).sort();
    assert.deepEqual(items, expected.items, "the nodes that exist");
    const edges = reference.Link.rows.map((row) => edgeName(...JSON.parse(row))).sort();
    assert.deepEqual(edges, expected.edges, "the edges that show");
    const deletedAbsent = KEYS.filter(
      (k) => !items.includes(k) && applied.some((x) => x.op.op === "delete_node" && x.op.key === k),
    );
    for (const r of [...replicas, hubReader]) {
      assert.equal(await nodeVisible(r, victim), 0, `${r.name} still shows ${victim}`);
    }

    // 3. Real work happened.
    const conflicts = [];
    for (const r of replicas) for (const x of await r.conflicts()) conflicts.push({ replica: r.name, type: x.type });
    const types = {};
    for (const x of conflicts) types[x.type] = (types[x.type] ?? 0) + 1;
    const appliedBy = {};
    for (const x of applied) appliedBy[x.op.op] = (appliedBy[x.op.op] ?? 0) + 1;
    const deletes = appliedBy.delete_node ?? 0;
    const summary =
      `seed ${seed}: ${stats.applied} ops applied (${SETUP.length} of them the setup) of ${stats.attempted} ` +
      `${JSON.stringify(appliedBy)}, ` +
      `${stats.refused} refused (${stats.refusedChecked} of them checked against the graph) ` +
      `${JSON.stringify(refusedBy)}, ` +
      `${conflicts.length} conflicts ${JSON.stringify(types)} ` +
      `(${stats.syncConflicts} conflict events during syncs), ${stats.syncs} syncs, ${stats.partitions} partitions; ` +
      `${items.length} items, ${edges.length} edges, ${deletedAbsent.length} deleted keys absent; ` +
      `${((Date.now() - started) / 1000).toFixed(1)} s`;
    t.diagnostic(summary);
    console.log(`interop: ${summary}`);
    assert.ok(stats.applied - SETUP.length > 150, summary);
    assert.ok(stats.refused > 0, summary);
    assert.ok(conflicts.length > 0, summary);
    assert.ok(deletes > 0 && deletedAbsent.includes(victim), summary);
    assert.ok(stats.partitions > 0, summary);
    assert.deepEqual(events.filter((e) => e.type === "error"), []);
  } catch (e) {
    const rerun = `seed ${seed} (rerun with KUZU_SYNC_SEED=${seed})`;
    throw new Error(`${rerun}: ${e.message}\nhub log (tail):\n${hubLog().slice(-4000)}`, { cause: e });
  } finally {
    if (a) await a.close();
    if (b) await b.close();
    await n.close();
    await w.close();
    if (hub) await stopHub(hub);
  }
});
