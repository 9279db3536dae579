// The library on kuzu-wasm's Node build (the synchronous one), and a JS replica on native
// kuzu and one on kuzu-wasm converging through bundles.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Replica } from "../index.js";
import { nativeDb, wasmDb, tempDir, ALL_TYPES_QUERY, SCHEMA, PEOPLE } from "./helpers.mjs";

test("kuzu-wasm: writes with exact values, reopen, refusal", async () => {
  const dir = tempDir("wasm-reopen");
  let app = await wasmDb(dir);
  let replica = await Replica.open({ kuzu: app.conn, peerId: "browser-1" });
  await replica.write([...SCHEMA, ...PEOPLE]);
  const rows = await app.rows(ALL_TYPES_QUERY);
  assert.equal(rows.length, 3);
  assert.equal(rows[0].big, "9007199254740993");
  assert.equal(rows[0].gap, "1 year 2 days 00:00:00.000005");
  assert.equal(rows[0].money, "12345678901234.5678");
  await assert.rejects(
    replica.write([
      { op: "add_node", table: "Person", props: { name: "Dan" } },
      { op: "add_node", table: "Nope", props: {} },
    ]),
    /unknown table "Nope"/,
  );
  assert.equal((await app.rows("MATCH (p:Person) RETURN p.name")).length, 3);
  const before = await replica.status();
  await replica.close();
  await app.close();

  app = await wasmDb(dir);
  replica = await Replica.open({ kuzu: app.conn });
  assert.deepEqual(await replica.status(), before);
  assert.deepEqual(await app.rows(ALL_TYPES_QUERY), rows);
  await replica.close();
  await app.close();
});

test("a replica on native kuzu and one on kuzu-wasm converge", async () => {
  const n = nativeDb();
  const w = await wasmDb();
  const a = await Replica.open({ kuzu: n.conn, peerId: "node-1" });
  const b = await Replica.open({ kuzu: w.conn, peerId: "wasm-1" });
  await a.write([...SCHEMA, ...PEOPLE]);
  assert.equal((await b.importBundle(await a.exportBundle())).applied, SCHEMA.length + PEOPLE.length);
  await a.write([{ op: "update", table: "Person", key: "Carol", prop: "score", value: 1.5 }]);
  await b.write([
    { op: "update", table: "Person", key: "Carol", prop: "score", value: 2.5 },
    { op: "delete_edge", table: "Knows", from: "Alice", to: "Bob" },
    { op: "add_node", table: "Person", props: { name: "Wes", tags: ["x"] } },
  ]);
  await a.importBundle(await b.exportBundle((await a.status()).versionVector));
  await b.importBundle(await a.exportBundle((await b.status()).versionVector));
  assert.deepEqual((await a.status()).versionVector, (await b.status()).versionVector);
  assert.deepEqual(await n.rows(ALL_TYPES_QUERY), await w.rows(ALL_TYPES_QUERY));
  assert.equal((await n.rows(ALL_TYPES_QUERY)).length, 4);
  assert.deepEqual(await n.rows("MATCH ()-[k:Knows]->() RETURN count(*) AS c"), [{ c: 0 }]);
  for (const r of [a, b]) await r.close();
  await n.close();
  await w.close();
});
