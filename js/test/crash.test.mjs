// SIGKILL a Node process importing bundles into its own Kuzu database, at 24 points, and
// check after each crash that the database holds exactly the state of its logged events
// (the log and the graph commit together), then that finishing the imports gives the same
// graph as a replica that never crashed.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Replica } from "../index.js";
import { nativeDb, tempDir } from "./helpers.mjs";

const CHILD = fileURLToPath(new URL("./crash-child.mjs", import.meta.url));
const KILLS = 24;
const BATCHES = 6;
const ITEMS = 250;
// The source's own counter after each bundle: 2 DDL events, then per batch ITEMS nodes,
// ITEMS - 1 edges and (after the first) one update.
const BUNDLE_ENDS = [0];
for (let b = 0, c = 2; b < BATCHES; b++) BUNDLE_ENDS.push((c += 2 * ITEMS - 1 + (b > 0 ? 1 : 0)));
const QUERY =
  "MATCH (p:Item) OPTIONAL MATCH (p)-[l:Next]->(q:Item) " +
  "RETURN p.id AS id, p.label AS label, CAST(p.n AS STRING) AS n, q.id AS next ORDER BY id, next";

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Writes BATCHES batches on a source replica and exports one bundle per batch; returns
 * the files and the rows after each number of bundles (0 to BATCHES).
 */
async function makeBundles(dir) {
  const src = nativeDb(tempDir("crash-src"));
  const r = await Replica.open({ kuzu: src.conn, peerId: "source" });
  await r.write([
    { op: "ddl", cypher: "CREATE NODE TABLE Item(id INT64, label STRING, n INT64, PRIMARY KEY(id))" },
    { op: "ddl", cypher: "CREATE REL TABLE Next(FROM Item TO Item)" },
  ]);
  const files = [];
  const expectedAt = [[]];
  let since = {};
  for (let b = 0; b < BATCHES; b++) {
    const ops = [];
    for (let i = 0; i < ITEMS; i++) {
      const id = b * ITEMS + i;
      ops.push({ op: "add_node", table: "Item", props: { id, label: `item ${id}`, n: BigInt(id) * 1000003n } });
      if (i > 0) ops.push({ op: "add_edge", table: "Next", from: id - 1, to: id });
    }
    if (b > 0) ops.push({ op: "update", table: "Item", key: (b - 1) * ITEMS, prop: "label", value: `updated by ${b}` });
    await r.write(ops);
    const file = path.join(dir, `batch-${b}.bundle`);
    fs.writeFileSync(file, await r.exportBundle(since));
    since = (await r.status()).versionVector;
    files.push(file);
    expectedAt.push(await src.rows(QUERY));
  }
  await r.close();
  await src.close();
  return { files, expectedAt };
}

function runChild(dir, files, killAfterMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, ...files], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    let timer = null;
    child.stdout.on("data", (d) => {
      out += d;
      // The clock starts once the replica is open: the kills land in the imports.
      if (timer === null && out.includes("open\n")) {
        timer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      }
    });
    child.stderr.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (signal !== "SIGKILL" && code !== 0) reject(new Error(`child failed (${code}): ${err}`));
      else resolve({ killed: signal === "SIGKILL", imported: (out.match(/imported/g) || []).length });
    });
  });
}

test("SIGKILL during imports loses nothing committed and applies nothing twice", { timeout: 600_000 }, async (t) => {
  const work = tempDir("crash");
  const { files, expectedAt } = await makeBundles(work);
  const random = rng(20261128);
  // How long the whole run takes on this machine, uncrashed: the kills are spread over it.
  const started = Date.now();
  const dry = await runChild(tempDir("crash-dry"), files, 3_600_000);
  assert.equal(dry.imported, files.length);
  const span = Date.now() - started;
  let dir = tempDir("crash-replica");
  let killed = 0;
  let midImport = 0;
  for (let k = 0; k < KILLS; k++) {
    // Each round restarts from where the last one stopped: already imported bundles are
    // duplicates, so the kill lands in a later one.
    const { killed: wasKilled } = await runChild(dir, files, Math.floor(random() * span * 0.6));
    if (wasKilled) killed++;

    // Reopen in this process and check: the log holds whole bundles only (never part of
    // an import), and the rows are exactly those of the logged bundles.
    const app = nativeDb(dir);
    const r = await Replica.open({ kuzu: app.conn });
    const own = (await r.status()).versionVector.source ?? 0;
    const at = BUNDLE_ENDS.indexOf(own);
    assert.ok(at >= 0, `after kill ${k}: the log's counter ${own} is inside a bundle`);
    // With no bundle logged, the table may exist (its DDL commits first) but holds nothing.
    const rows = await app.rows(QUERY).catch(() => []);
    assert.deepEqual(rows, expectedAt[at], `after kill ${k}, ${at} bundles logged`);
    await r.close();
    await app.close();
    if (wasKilled && at > 0 && at < BATCHES) midImport++;
    // Once everything is in, start again on a new database, so every round has work left.
    if (at === BATCHES) dir = tempDir("crash-replica");
  }
  t.diagnostic(`${killed} of ${KILLS} runs killed, ${midImport} with some but not all bundles logged; a whole run takes ${span} ms`);
  assert.ok(killed >= KILLS / 2, `only ${killed} of ${KILLS} runs were killed before they finished`);
  assert.ok(midImport > 0, "no kill landed after a first import");

  // Finish: the same graph as the source.
  const { killed: lastKilled } = await runChild(dir, files, 3_600_000);
  assert.equal(lastKilled, false);
  const app = nativeDb(dir);
  assert.deepEqual(await app.rows(QUERY), expectedAt[BATCHES]);
  await app.close();
});
