// Snapshots on JS replicas: a bundle or a hub whose log is compacted starts a JS replica
// from a snapshot (its state replaced, every table rebuilt); the snapshot is kept in the
// database beside the log, survives a reopen and a rebuild interrupted halfway, and goes
// on into the replica's own exports.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Replica } from "../index.js";
import {
  nativeDb,
  wasmDb,
  tempDir,
  cli,
  cliWrite,
  cliRows,
  freePort,
  startHub,
  stopHub,
  ALL_TYPES_QUERY,
  SCHEMA,
  PEOPLE,
} from "./helpers.mjs";

/**
 * A CLI replica whose log is compacted into a snapshot (of the test rows, written by a JS
 * replica: they hold bigints), with one event after it.
 */
async function compactedSource() {
  const seed = nativeDb();
  const writer = await Replica.open({ kuzu: seed.conn, peerId: "seed" });
  await writer.write([...SCHEMA, ...PEOPLE]);
  const file = path.join(seed.dir, "seed.bundle");
  fs.writeFileSync(file, await writer.exportBundle());
  await writer.close();
  await seed.close();
  const src = path.join(tempDir("src"), "src");
  cli("init", src, "--peer-id", "src");
  cli("import", src, file);
  const compacted = JSON.parse(cli("compact", src));
  assert.ok(compacted.snapshot_events >= 6, JSON.stringify(compacted));
  cliWrite(src, [{ op: "add_node", table: "Person", props: { name: "Dora", big: 4 } }]);
  const status = JSON.parse(cli("status", src));
  assert.equal(status.events.stored, 1, "the log holds only the event after the snapshot");
  return src;
}

const EDGES = "MATCH (a:Person)-[k:Knows]->(b:Person) RETURN a.name AS a, b.name AS b, CAST(k.since AS STRING) AS since";

test("a bundle that starts from a snapshot is installed, kept across a reopen, and exported on", { timeout: 180_000 }, async () => {
  const src = await compactedSource();
  const file = path.join(tempDir("bundle"), "src.bundle");
  cli("export", src, "--out", file);
  const bundle = new Uint8Array(fs.readFileSync(file));
  const want = cliRows(src, ALL_TYPES_QUERY);
  assert.equal(want.length, 4);

  for (const open of [nativeDb, wasmDb]) {
    const app = await open();
    let replica = await Replica.open({ kuzu: app.conn, peerId: "js-1" });
    // An own table and row first: the install keeps them (the state is the snapshot plus
    // the own events it lacks), though every table is rebuilt.
    await replica.write([
      { op: "ddl", cypher: "CREATE NODE TABLE Note(id STRING, text STRING, PRIMARY KEY(id))" },
      { op: "add_node", table: "Note", props: { id: "n1", text: "mine" } },
    ]);
    const out = await replica.importBundle(bundle);
    assert.ok(out.snapshotEvents >= 6, JSON.stringify(out));
    assert.equal(out.applied, 1, "the event after the snapshot");
    assert.deepEqual(await app.rows(ALL_TYPES_QUERY), want, app.dir);
    assert.deepEqual(await app.rows(EDGES), [{ a: "Alice", b: "Bob", since: "2020" }]);
    assert.deepEqual(await app.rows("MATCH (n:Note) RETURN n.text AS t"), [{ t: "mine" }]);
    const status = await replica.status();
    assert.equal(status.nodes, 5);
    await replica.close();

    // Reopened: the snapshot and the log are read back; nothing to apply.
    replica = await Replica.open({ kuzu: app.conn });
    assert.deepEqual(await replica.status(), status);
    await replica.write([{ op: "add_node", table: "Note", props: { id: "n2", text: "after" } }]);

    // Its own export starts from the snapshot: a fresh CLI replica takes it whole.
    const back = path.join(tempDir("back"), "back");
    cli("init", back, "--peer-id", "back");
    const mine = path.join(tempDir("mine"), "mine.bundle");
    fs.writeFileSync(mine, await replica.exportBundle());
    const imported = JSON.parse(cli("import", back, mine));
    assert.ok(imported.snapshot_installed.snapshot_events >= 6, JSON.stringify(imported));
    assert.deepEqual(cliRows(back, ALL_TYPES_QUERY), want);
    assert.deepEqual(
      cliRows(back, "MATCH (n:Note) RETURN n.text AS t ORDER BY t"),
      [{ t: "after" }, { t: "mine" }],
    );
    await replica.close();
    await app.close();
  }
});

test("a rebuild that fails halfway is finished when the replica opens again", { timeout: 120_000 }, async () => {
  const src = await compactedSource();
  const file = path.join(tempDir("bundle"), "src.bundle");
  cli("export", src, "--out", file);
  const want = cliRows(src, ALL_TYPES_QUERY);
  const app = nativeDb();
  let failing = false;
  let armed = false;
  // Fails the first row statement after the tables were dropped: the snapshot, the
  // rewritten log and the rebuild mark have committed; the rows have not.
  const flaky = new Proxy(app.conn, {
    get(target, prop) {
      const v = Reflect.get(target, prop);
      if (prop === "query") {
        return async (cypher) => {
          if (failing && cypher.startsWith("DROP TABLE")) armed = true;
          return v.call(target, cypher);
        };
      }
      if (prop === "execute") {
        return async (ps, params) => {
          if (armed) {
            armed = false;
            failing = false;
            throw new Error("injected: the process died here");
          }
          return v.call(target, ps, params);
        };
      }
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  let replica = await Replica.open({ kuzu: flaky, peerId: "js-2" });
  failing = true;
  // The failure throws; the replica reopens from what committed (the snapshot and the
  // mark) and finishes the rebuild before anything else.
  await assert.rejects(replica.importBundle(new Uint8Array(fs.readFileSync(file))), /injected/);
  assert.equal(failing, false, "the failure was injected after the tables were dropped");
  const mark = await app.rows("MATCH (m:_ks_meta) WHERE m.k = 'graph_rebuild' RETURN m.v AS v");
  assert.deepEqual(mark, [{ v: "0" }], "the reopen finished the rebuild");
  assert.deepEqual(await app.rows(ALL_TYPES_QUERY), want);
  assert.equal((await replica.status()).nodes, 4);
  await replica.close();
  await app.close();
});

test("a hub whose log is compacted starts new JS replicas from its snapshot", { timeout: 120_000 }, async () => {
  const hubDir = await compactedSource();
  const want = cliRows(hubDir, ALL_TYPES_QUERY);
  const port = await freePort();
  const hub = await startHub(hubDir, port);
  try {
    for (const [open, url] of [
      [nativeDb, `ws://127.0.0.1:${port}/sync`],
      [wasmDb, `http://127.0.0.1:${port}/sync`],
    ]) {
      const app = await open();
      const replica = await Replica.open({ kuzu: app.conn, peerId: `fresh-${url.slice(0, 2)}` });
      await replica.sync(url);
      assert.deepEqual(await app.rows(ALL_TYPES_QUERY), want, url);
      assert.equal((await replica.status()).nodes, 4);
      await replica.close();
      await app.close();
    }
  } finally {
    await stopHub(hub);
  }
});
