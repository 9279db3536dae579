// Importing a bundle into a JS replica, against the same rows written by plain Kuzu, on
// each JS host, in one run:
//   node bench/import.mjs [ROWS]        (default 10000)
// kuzu-sync: a bundle of ROWS add_node events imported by Replica.importBundle (decode,
// checks, conflict rules, the log rows and the graph rows in one transaction).
// Baseline: the same rows inserted by one prepared `UNWIND $rows CREATE` in one
// transaction, every value a string under CAST (the fastest way JS-NOTES found that is
// also exact), with no log. Both on a fresh database; medians of 3 runs.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import kuzu from "kuzu";
import { Replica } from "../index.js";

const require = createRequire(import.meta.url);
const ROWS = Number(process.argv[2] ?? 10_000);
const DDL = "CREATE NODE TABLE Person(id INT64, name STRING, age INT64, score DOUBLE, born DATE, PRIMARY KEY(id))";

function tmp() {
  return fs.mkdtempSync(path.join(os.tmpdir(), "kuzu-sync-bench-"));
}

async function native() {
  const db = new kuzu.Database(path.join(tmp(), "db.kuzu"));
  const conn = new kuzu.Connection(db);
  return {
    conn,
    run: async (c) => (await conn.query(c)).close(),
    exec: async (c, p) => (await conn.execute(await conn.prepare(c), p)).close(),
    close: async () => {
      await conn.close();
      await db.close();
    },
  };
}

async function wasm() {
  const kw = require("kuzu-wasm/nodejs/sync");
  await kw.init();
  const db = new kw.Database(path.join(tmp(), "db.kuzu"));
  const conn = new kw.Connection(db);
  const check = (r) => {
    if (!r.isSuccess()) throw new Error(r.getErrorMessage());
    r.close();
  };
  return {
    conn,
    run: async (c) => check(conn.query(c)),
    exec: async (c, p) => check(conn.execute(conn.prepare(c), p)),
    close: async () => {
      conn.close();
      db.close();
    },
  };
}

function person(i) {
  return { id: i, name: `person ${i}`, age: i % 90, score: i / 7, born: `19${50 + (i % 50)}-0${1 + (i % 9)}-1${i % 9}` };
}

async function makeBundle() {
  const h = await native();
  const r = await Replica.open({ kuzu: h.conn, peerId: "source" });
  await r.write([{ op: "ddl", cypher: DDL }]);
  for (let i = 0; i < ROWS; i += 5000) {
    const ops = [];
    for (let j = i; j < Math.min(ROWS, i + 5000); j++) ops.push({ op: "add_node", table: "Person", props: person(j) });
    await r.write(ops);
  }
  const bytes = await r.exportBundle();
  await r.close();
  await h.close();
  return bytes;
}

async function ours(open, bundle) {
  const h = await open();
  const r = await Replica.open({ kuzu: h.conn, peerId: "bench" });
  const t = performance.now();
  const out = await r.importBundle(bundle);
  const ms = performance.now() - t;
  if (out.applied !== ROWS + 1) throw new Error(`applied ${out.applied}`);
  await r.close();
  await h.close();
  return ms;
}

async function baseline(open) {
  const h = await open();
  await h.run(DDL);
  const rows = [];
  for (let i = 0; i < ROWS; i++) {
    const p = person(i);
    rows.push({ id: String(p.id), name: p.name, age: String(p.age), score: String(p.score), born: p.born });
  }
  const t = performance.now();
  await h.run("BEGIN TRANSACTION");
  for (let i = 0; i < rows.length; i += 10_000) {
    await h.exec(
      "UNWIND $rows AS r CREATE (:Person {id: CAST(r.id AS INT64), name: r.name, age: CAST(r.age AS INT64), " +
        "score: CAST(r.score AS DOUBLE), born: CAST(r.born AS DATE)})",
      { rows: rows.slice(i, i + 10_000) },
    );
  }
  await h.run("COMMIT");
  const ms = performance.now() - t;
  await h.close();
  return ms;
}

const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const bundle = await makeBundle();
console.log(`${ROWS} nodes; bundle ${bundle.length} bytes`);
for (const [name, open] of [["kuzu (native)", native], ["kuzu-wasm (Node, sync)", wasm]]) {
  const a = [];
  const b = [];
  for (let k = 0; k < 3; k++) {
    a.push(await ours(open, bundle));
    b.push(await baseline(open));
  }
  const x = median(a);
  const y = median(b);
  console.log(`${name}: importBundle ${x.toFixed(0)} ms, plain UNWIND ${y.toFixed(0)} ms, ratio ${(x / y).toFixed(2)}x`);
}
