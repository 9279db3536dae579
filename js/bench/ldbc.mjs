// A Node replica importing the LDBC SNB SF0.1 subset (183k rows: 6 node tables, 11 rel
// tables) as a bundle, against the same rows written by plain Kuzu in the same runtime,
// in one run:
//   KUZU_SYNC_BIN=…/kuzu-sync node bench/ldbc.mjs [kuzu|kuzu-wasm|both]   (default both)
// The bundle is made by the native CLI (`init`, `schema`, `load` of the dataset's
// copy.cypher, `export`). kuzu-sync: `Replica.importBundle` on a fresh database (decode,
// checks, conflict rules, the log rows, the graph rows and the watermark in one
// transaction). Baseline: the rows that import produced, read back as text, inserted into
// a fresh database by the best plain statements KUZU-NOTES measured without COPY: nodes by
// prepared `UNWIND $rows … CREATE`, 10,000 rows each; edges by one prepared single-row
// `MATCH (a {pk}), (b {pk}) CREATE (a)-[…]->(b)` each (12x faster than `UNWIND … MATCH …
// CREATE`, which Kuzu plans as a scan per row); every value a string under CAST; in one
// transaction; no log. One run each (a run takes minutes).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import kuzu from "kuzu";
import { Replica } from "../index.js";

const require = createRequire(import.meta.url);
const which = process.argv[2] ?? "both";
const DATASET = path.resolve(
  process.env.KUZU_SYNC_DATASETS ?? new URL("../../../shared/datasets", import.meta.url).pathname,
  "ldbc-sf01",
);
const BIN = process.env.KUZU_SYNC_BIN;
if (!BIN) throw new Error("KUZU_SYNC_BIN must name the kuzu-sync binary");

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "kuzu-sync-ldbc-"));

async function native() {
  const db = new kuzu.Database(path.join(tmp(), "db.kuzu"));
  const conn = new kuzu.Connection(db);
  const all = async (r) => {
    const rows = await r.getAll();
    r.close();
    return rows;
  };
  return {
    conn,
    rows: async (c) => all(await conn.query(c)),
    exec: async (c, p) => all(await conn.execute(await conn.prepare(c), p)),
    prepare: async (c) => conn.prepare(c),
    run: async (ps, p) => (await conn.execute(ps, p)).close(),
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
  const all = (r) => {
    if (!r.isSuccess()) throw new Error(r.getErrorMessage());
    const rows = r.getAllObjects();
    r.close();
    return rows;
  };
  return {
    conn,
    rows: async (c) => all(conn.query(c)),
    exec: async (c, p) => all(conn.execute(conn.prepare(c), p)),
    prepare: async (c) => conn.prepare(c),
    run: async (ps, p) => {
      const r = conn.execute(ps, p);
      if (!r.isSuccess()) throw new Error(r.getErrorMessage());
      r.close();
    },
    close: async () => {
      conn.close();
      db.close();
    },
  };
}

function makeBundle() {
  const dir = tmp();
  const src = path.join(dir, "src");
  execFileSync(BIN, ["init", src, "--peer-id", "loader"]);
  execFileSync(BIN, ["schema", src, path.join(DATASET, "schema.cypher")]);
  const loaded = JSON.parse(execFileSync(BIN, ["load", src, path.join(DATASET, "copy.cypher")], { encoding: "utf8" }));
  const file = path.join(dir, "ldbc.bundle");
  execFileSync(BIN, ["export", src, "--out", file]);
  return { bytes: new Uint8Array(fs.readFileSync(file)), rows: loaded.rows };
}

/** Every user table's rows as text, read from a replica's database. */
async function readBack(h) {
  const tables = (await h.rows("CALL show_tables() RETURN name, type")).filter((t) => !t.name.startsWith("_ks_"));
  const out = [];
  for (const t of tables) {
    const cols = (await h.rows(`CALL table_info('${t.name}') RETURN *`))
      .map((c) => ({ name: c.name, type: c.type }))
      .filter((c) => !c.name.startsWith("_ks_"));
    const ret = cols.map((c, i) => `CAST(x.${c.name} AS STRING) AS c${i}`);
    if (t.type === "NODE") {
      const rows = await h.rows(`MATCH (x:${t.name}) RETURN ${ret.join(", ")}`);
      out.push({ kind: "node", name: t.name, cols, rows });
    } else {
      const [conn] = await h.rows(`CALL show_connection('${t.name}') RETURN *`);
      const from = conn["source table name"];
      const to = conn["destination table name"];
      const cyph = `MATCH (a:${from})-[x:${t.name}]->(b:${to}) RETURN CAST(a.id AS STRING) AS f, CAST(b.id AS STRING) AS t${ret.map((r) => `, ${r}`).join("")}`;
      out.push({ kind: "rel", name: t.name, from, to, cols, rows: await h.rows(cyph) });
    }
  }
  return out;
}

async function ours(open, bundle) {
  const h = await open();
  const r = await Replica.open({ kuzu: h.conn, peerId: "bench" });
  const t = performance.now();
  const out = await r.importBundle(bundle.bytes);
  const ms = performance.now() - t;
  const tables = await readBack(h);
  await r.close();
  await h.close();
  return { ms, applied: out.applied, tables };
}

async function baseline(open, tables) {
  const h = await open();
  for (const s of fs.readFileSync(path.join(DATASET, "schema.cypher"), "utf8").split(";")) {
    if (s.trim()) await h.rows(s);
  }
  const set = (cols, v) => cols.map((c, i) => `${c.name}: CAST(${v}c${i} AS ${c.type})`).join(", ");
  const t = performance.now();
  await h.rows("BEGIN TRANSACTION");
  let rows = 0;
  for (const tb of tables.filter((x) => x.kind === "node")) {
    const cypher = `UNWIND $rows AS r CREATE (:${tb.name} {${set(tb.cols, "r.")}})`;
    for (let i = 0; i < tb.rows.length; i += 10_000) {
      await h.exec(cypher, { rows: tb.rows.slice(i, i + 10_000) });
    }
    rows += tb.rows.length;
  }
  for (const tb of tables.filter((x) => x.kind === "rel")) {
    const ps = await h.prepare(
      `MATCH (a:${tb.from} {id: CAST($f AS INT64)}), (b:${tb.to} {id: CAST($t AS INT64)}) ` +
        `CREATE (a)-[:${tb.name} {${set(tb.cols, "$")}}]->(b)`,
    );
    for (const r of tb.rows) await h.run(ps, r);
    rows += tb.rows.length;
  }
  await h.rows("COMMIT");
  const ms = performance.now() - t;
  await h.close();
  return { ms, rows };
}

const t0 = performance.now();
const bundle = makeBundle();
console.log(`LDBC SF0.1 subset: ${bundle.rows} rows; bundle ${bundle.bytes.length} bytes (made in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
const hosts = [
  ["kuzu (native)", native],
  ["kuzu-wasm (Node, sync)", wasm],
].filter(([name]) => which === "both" || name.startsWith(which + " "));
for (const [name, open] of hosts) {
  const a = await ours(open, bundle);
  const b = await baseline(open, a.tables);
  if (b.rows !== bundle.rows) throw new Error(`${name}: the baseline wrote ${b.rows} rows, the dataset has ${bundle.rows}`);
  console.log(
    `${name}: importBundle ${a.ms.toFixed(0)} ms (${a.applied} events), plain UNWIND ${b.ms.toFixed(0)} ms (${b.rows} rows), ratio ${(a.ms / b.ms).toFixed(2)}x`,
  );
}
