// The library on the application's own native `kuzu` connection: writes, exact values,
// atomicity, reopening, bundles both ways with the native CLI, bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import kuzu from "kuzu";
import { Replica, wasmMemoryBytes } from "../index.js";
import {
  nativeDb,
  tempDir,
  cli,
  cliWrite,
  cliRows,
  ALL_TYPES_QUERY,
  SCHEMA,
  PEOPLE,
} from "./helpers.mjs";

test("writes land in the application's database with exact values", async () => {
  const app = nativeDb();
  const replica = await Replica.open({ kuzu: app.conn, peerId: "laptop-1" });
  const changes = [];
  replica.addEventListener("change", (e) => changes.push(e.detail.tables));
  const out = await replica.write([...SCHEMA, ...PEOPLE]);
  assert.equal(out.applied, SCHEMA.length + PEOPLE.length);
  assert.deepEqual(out.ids[0], "laptop-1:1");
  const rows = await app.rows(ALL_TYPES_QUERY);
  assert.equal(rows.length, 3);
  const alice = rows[0];
  assert.equal(alice.big, "9007199254740993");
  assert.equal(alice.score, "0.100000");
  assert.equal(alice.born, "1990-02-28");
  assert.equal(alice.seen, "2024-05-06 07:08:09.123456");
  assert.equal(alice.gap, "1 year 2 days 00:00:00.000005");
  assert.equal(alice.tags, "[a,b, c,it's]");
  assert.equal(alice.money, "12345678901234.5678");
  assert.equal(rows[1].big, "-9007199254740993");
  assert.equal(rows[1].tags, "[]");
  assert.equal(rows[2].big, null);
  const edges = await app.rows("MATCH (a)-[k:Knows]->(b) RETURN a.name, b.name, k.since");
  assert.deepEqual(edges, [{ "a.name": "Alice", "b.name": "Bob", "k.since": 2020 }]);
  assert.deepEqual(changes, [["Knows", "Person"]]);
  const status = await replica.status();
  assert.deepEqual(status.versionVector, { "laptop-1": 6 });
  assert.equal(status.nodes, 3);
  assert.equal(status.edges, 1);
  await replica.close();
  await app.close();
});

test("a refused write applies nothing and names the bad op", async () => {
  const app = nativeDb();
  const replica = await Replica.open({ kuzu: app.conn, peerId: "a" });
  await replica.write(SCHEMA);
  const before = await replica.status();
  // The first op is valid and applied in memory before the second is refused.
  await assert.rejects(
    replica.write([
      { op: "add_node", table: "Person", props: { name: "Dan" } },
      { op: "add_node", table: "Person", props: { name: "Eve", big: "not a number" } },
    ]),
    /line 2: .*big/,
  );
  await assert.rejects(replica.write([{ op: "add_node", table: "Nope", props: {} }]), /unknown table "Nope"/);
  await assert.rejects(replica.write([{ op: "fly", table: "Person" }]), /unknown op "fly"/);
  await assert.rejects(replica.write({ op: "add_node" }), /write takes an array of ops/);
  await assert.rejects(replica.write([null]), /op 0: an op must be an object/);
  assert.deepEqual(await app.rows("MATCH (p:Person) RETURN p.name"), []);
  assert.deepEqual(await replica.status(), before);
  // Still usable, counters continue where the log is.
  const out = await replica.write([{ op: "add_node", table: "Person", props: { name: "Dan" } }]);
  assert.deepEqual(out.ids, ["a:3"]);
  await replica.close();
  await app.close();
});

test("a commit that fails halfway leaves neither rows nor log entries", async () => {
  const app = nativeDb();
  let failAt = -1;
  let executed = 0;
  // The application's connection, failing its Nth prepared execution.
  const flaky = new Proxy(app.conn, {
    get(target, prop) {
      const v = Reflect.get(target, prop);
      if (prop === "execute") {
        return async (ps, params) => {
          if (executed++ === failAt) throw new Error("injected: disk full");
          return v.call(target, ps, params);
        };
      }
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const replica = await Replica.open({ kuzu: flaky, peerId: "a" });
  await replica.write(SCHEMA);
  const before = await replica.status();
  for (const at of [0, 1, 2]) {
    executed = 0;
    failAt = at;
    await assert.rejects(replica.write(PEOPLE), /injected: disk full/);
    assert.deepEqual(await app.rows("MATCH (p:Person) RETURN p.name"), [], `failure at ${at}`);
    assert.deepEqual(await replica.status(), before, `failure at ${at}`);
  }
  failAt = -1;
  const out = await replica.write(PEOPLE);
  assert.deepEqual(out.ids[0], "a:3");
  assert.equal((await app.rows("MATCH (p:Person) RETURN p.name")).length, 3);
  await replica.close();
  await app.close();
});

test("the WASM core reports its memory", async () => {
  const app = nativeDb();
  const replica = await Replica.open({ kuzu: app.conn, peerId: "m" });
  const before = await wasmMemoryBytes();
  assert.ok(before >= 1 << 16 && before % (1 << 16) === 0, `${before}: whole 64 KiB pages`);
  const ops = [SCHEMA[0]];
  for (let i = 0; i < 3000; i++) ops.push({ op: "add_node", table: "Person", props: { name: `p${i}`, tags: ["x".repeat(200)] } });
  await replica.write(ops);
  assert.ok((await wasmMemoryBytes()) >= before);
  await replica.close();
  await app.close();
});

test("reopening keeps the graph, the log and the peer id", async () => {
  const dir = tempDir("reopen");
  let app = nativeDb(dir);
  let replica = await Replica.open({ kuzu: app.conn, peerId: "phone" });
  await replica.write([...SCHEMA, ...PEOPLE]);
  await replica.goOffline();
  await replica.write([{ op: "add_node", table: "Person", props: { name: "Dan" } }]);
  const before = await replica.status();
  await replica.close();
  await app.close();

  app = nativeDb(dir);
  await assert.rejects(Replica.open({ kuzu: app.conn, peerId: "other" }), /belongs to peer "phone"/);
  replica = await Replica.open({ kuzu: app.conn });
  assert.deepEqual(await replica.status(), before);
  const queue = await replica.queueStatus();
  assert.deepEqual([queue.offline, queue.queued, queue.capacity], [true, 1, 10000]);
  assert.ok(queue.estimatedSizeBytes > 0);
  const out = await replica.write([{ op: "update", table: "Person", key: "Dan", prop: "big", value: 1 }]);
  assert.deepEqual(out.ids, ["phone:8"]);
  await replica.goOnline();
  assert.equal((await replica.queueStatus()).offline, false);
  await replica.close();
  await app.close();
});

test("bundles move between a JS replica and a native CLI replica, both ways", async () => {
  const app = nativeDb();
  const js = await Replica.open({ kuzu: app.conn, peerId: "js-1" });
  await js.write([...SCHEMA, ...PEOPLE]);

  // JS -> native
  const native = path.join(tempDir("cli"), "replica");
  cli("init", native, "--peer-id", "native-1");
  const file = path.join(app.dir, "js.bundle");
  fs.writeFileSync(file, await js.exportBundle());
  const imported = JSON.parse(cli("import", native, file));
  assert.equal(imported.applied, SCHEMA.length + PEOPLE.length);
  assert.deepEqual(cliRows(native, ALL_TYPES_QUERY), await app.rows(ALL_TYPES_QUERY));

  // Concurrent writes on both sides, then native -> JS
  cliWrite(native, [
    { op: "update", table: "Person", key: "Carol", prop: "score", value: 7.25 },
    { op: "add_node", table: "Person", props: { name: "Zed", big: 1 } },
  ]);
  await js.write([{ op: "update", table: "Person", key: "Bob", prop: "ok", value: true }]);
  const back = path.join(app.dir, "native.bundle");
  cli("export", native, "--out", back, "--since", JSON.stringify({ "js-1": 1 }));
  const res = await js.importBundle(new Uint8Array(fs.readFileSync(back)));
  assert.equal(res.applied, 2);
  assert.ok(res.duplicates > 0, "the bundle carried js-1's events back");

  // and the JS write that native lacks
  const status = JSON.parse(cli("status", native));
  fs.writeFileSync(file, await js.exportBundle(status.version_vector));
  assert.equal(JSON.parse(cli("import", native, file)).applied, 1);
  assert.deepEqual(cliRows(native, ALL_TYPES_QUERY), await app.rows(ALL_TYPES_QUERY));
  assert.equal((await app.rows(ALL_TYPES_QUERY)).length, 4);
  await js.close();
  await app.close();
});

test("a corrupted or cut bundle is refused and changes nothing", async () => {
  const src = nativeDb();
  const a = await Replica.open({ kuzu: src.conn, peerId: "a" });
  await a.write([...SCHEMA, ...PEOPLE]);
  const bytes = await a.exportBundle();

  const dst = nativeDb();
  const b = await Replica.open({ kuzu: dst.conn, peerId: "b" });
  const flipped = bytes.slice();
  flipped[flipped.length >> 1] ^= 0x40;
  await assert.rejects(b.importBundle(flipped), /checksum mismatch/);
  await assert.rejects(b.importBundle(bytes.slice(0, 40)), /truncated/);
  await assert.rejects(b.importBundle(new Uint8Array([1, 2, 3])), /bundle/);
  await assert.rejects(b.importBundle("not bytes"), /importBundle takes a Uint8Array/);
  await assert.rejects(b.exportBundle({ a: "x" }), /version vector/);
  assert.deepEqual((await b.status()).versionVector, {});
  const res = await b.importBundle(bytes);
  assert.equal(res.applied, SCHEMA.length + PEOPLE.length);
  assert.deepEqual(await dst.rows(ALL_TYPES_QUERY), await src.rows(ALL_TYPES_QUERY));
  // Twice: all duplicates, nothing applied.
  const again = await b.importBundle(bytes);
  assert.deepEqual([again.applied, again.duplicates], [0, SCHEMA.length + PEOPLE.length]);
  for (const r of [a, b]) await r.close();
  await src.close();
  await dst.close();
});

test("concurrent updates resolve the same way on both sides", async () => {
  const x = nativeDb();
  const y = nativeDb();
  const a = await Replica.open({ kuzu: x.conn, peerId: "a" });
  const b = await Replica.open({ kuzu: y.conn, peerId: "b" });
  await a.write([...SCHEMA, ...PEOPLE]);
  await b.importBundle(await a.exportBundle());
  await a.write([{ op: "update", table: "Person", key: "Carol", prop: "score", value: 1.5 }]);
  await b.write([{ op: "update", table: "Person", key: "Carol", prop: "score", value: 2.5 }]);
  const conflicts = [];
  a.addEventListener("conflict", (e) => conflicts.push(e.detail.count));
  await a.importBundle(await b.exportBundle({ a: 6 }));
  await b.importBundle(await a.exportBundle({ b: 1 }));
  assert.deepEqual(await x.rows(ALL_TYPES_QUERY), await y.rows(ALL_TYPES_QUERY));
  assert.deepEqual(conflicts, [1]);
  const c = await a.conflicts();
  assert.equal(c.length, 1);
  assert.equal(c[0].property, "score");
  for (const r of [a, b]) await r.close();
  await x.close();
  await y.close();
});

// Kuzu 0.11.3 keeps what small transactions commit in its buffer pool until a checkpoint
// (it checkpoints by itself only at 16 MB of WAL): without the replica's periodic
// CHECKPOINT, one-node writes into a 32 MiB pool fail with "The buffer pool is full".
test("many small writes do not fill Kuzu's buffer pool", async () => {
  const dir = tempDir("pool");
  const db = new kuzu.Database(path.join(dir, "app.kuzu"), 32 * 1024 * 1024);
  const conn = new kuzu.Connection(db);
  const replica = await Replica.open({ kuzu: conn, peerId: "pool" });
  await replica.write([
    { op: "ddl", cypher: "CREATE NODE TABLE Item(id INT64, PRIMARY KEY (id))" },
  ]);
  const writes = 5000;
  for (let i = 0; i < writes; i++) {
    await replica.write([{ op: "add_node", table: "Item", props: { id: i } }]);
  }
  const r = await conn.query("MATCH (i:Item) RETURN count(*) AS n");
  assert.deepEqual(await r.getAll(), [{ n: writes }]);
  r.close();
  await replica.close();
  await conn.close();
  await db.close();
});
