// Conformance on real components: every Kuzu type of the tinysnb dataset round-trips
// exactly between the native CLI and JS replicas on `kuzu` and `kuzu-wasm` (compared with
// plain Kuzu, which ran the dataset's own schema and COPY scripts); the conflict examples
// of SPEC §2 between a replica on `kuzu` and one on `kuzu-wasm`; the offline example of
// SPEC §4 through a real hub (`kuzu-sync serve`).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Replica } from "../index.js";
import { nativeDb, wasmDb, tempDir, cli, cliRows, freePort, startHub, stopHub } from "./helpers.mjs";

// The datasets are read where they are (never copied into the repo): /work/shared/datasets
// from js/test, or KUZU_SYNC_DATASETS.
const DATASETS =
  process.env.KUZU_SYNC_DATASETS ?? fileURLToPath(new URL("../../../shared/datasets/", import.meta.url));

const TIMEOUT = { timeout: 180_000 };

/** The statements of a Cypher script (the datasets have no `;` inside strings). */
function statements(file) {
  return fs
    .readFileSync(file, "utf8")
    .split(";")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** Something that runs a read-only query and returns rows as objects keyed by column. */
function reader(name, rows) {
  return { name, rows };
}

/** Tables (name, kind, columns with types, FROM/TO pairs of rel tables), sorted by name. */
async function tablesOf(r) {
  const out = [];
  for (const t of await r.rows("CALL show_tables() RETURN name, type")) {
    const columns = (await r.rows(`CALL table_info('${t.name}') RETURN name, type`)).map((c) => ({
      name: c.name,
      type: c.type,
    }));
    const table = { name: t.name, kind: t.type, columns };
    if (t.type === "REL") {
      table.connections = (await r.rows(`CALL show_connection('${t.name}') RETURN *`)).map((c) => ({
        from: c["source table name"],
        to: c["destination table name"],
        fromKey: c["source table primary key"],
        toKey: c["destination table primary key"],
      }));
    }
    out.push(table);
  }
  return out.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
}

const alias = (i) => `c${String(i).padStart(2, "0")}`;

/**
 * Every row of every table in `tables` (the reference's description, so internal columns
 * are never read), each value as Kuzu's own text (`CAST(… AS STRING)`, null for NULL).
 * A rel table's rows start with the FROM and TO tables and the endpoints' primary keys.
 * Rows are not sorted here: `compare` sorts.
 */
async function dump(r, tables) {
  const out = {};
  for (const t of tables) {
    const rows = [];
    if (t.kind === "NODE") {
      const cols = t.columns.map((c, i) => `CAST(n.\`${c.name}\` AS STRING) AS ${alias(i)}`);
      for (const row of await r.rows(`MATCH (n:\`${t.name}\`) RETURN ${cols.join(", ")}`)) {
        rows.push(t.columns.map((_, i) => row[alias(i)]));
      }
    } else {
      for (const { from, to, fromKey, toKey } of t.connections) {
        const exprs = [
          `CAST(a.\`${fromKey}\` AS STRING)`,
          `CAST(b.\`${toKey}\` AS STRING)`,
          ...t.columns.map((c) => `CAST(e.\`${c.name}\` AS STRING)`),
        ];
        const q =
          `MATCH (a:\`${from}\`)-[e:\`${t.name}\`]->(b:\`${to}\`) RETURN ` +
          exprs.map((x, i) => `${x} AS ${alias(i)}`).join(", ");
        for (const row of await r.rows(q)) rows.push([from, to, ...exprs.map((_, i) => row[alias(i)])]);
      }
    }
    out[t.name] = rows;
  }
  return out;
}

/** The column headers of a table's dump rows, for messages. */
function header(t) {
  const props = t.columns.map((c) => c.name);
  return t.kind === "NODE" ? props : ["<from table>", "<to table>", "<from key>", "<to key>", ...props];
}

const sortRows = (rows) =>
  rows
    .map((r) => [JSON.stringify(r), r])
    .sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
    .map((x) => x[1]);

/**
 * Compares a dump with the reference's exactly, table by table, cell by cell (rows sorted
 * on both sides). Returns the number of rows compared; fails naming every differing
 * table, row, column and both values.
 */
function compare(label, tables, got, want) {
  const diffs = [];
  let rows = 0;
  for (const t of tables) {
    const names = header(t);
    const g = sortRows(got[t.name] ?? []);
    const w = sortRows(want[t.name] ?? []);
    assert.ok(w.length > 0, `${t.name}: the reference has no rows, the comparison would be vacuous`);
    if (g.length !== w.length) diffs.push(`${label}: ${t.name}: ${g.length} rows, want ${w.length}`);
    for (let i = 0; i < Math.max(g.length, w.length); i++) {
      for (let j = 0; j < names.length; j++) {
        const gv = g[i]?.[j];
        const wv = w[i]?.[j];
        if (gv !== wv) {
          diffs.push(
            `${label}: ${t.name} row ${i} (${JSON.stringify(w[i]?.[0])}) column ${names[j]}: ` +
              `got ${JSON.stringify(gv)}, want ${JSON.stringify(wv)}`,
          );
        }
      }
    }
    rows += w.length;
  }
  assert.deepEqual(diffs, [], `${label} differs from plain Kuzu`);
  return rows;
}

test("every Kuzu type of tinysnb round-trips exactly", TIMEOUT, async () => {
  const ds = path.join(DATASETS, "tinysnb");
  assert.ok(fs.existsSync(path.join(ds, "schema.cypher")), `no dataset at ${ds} (set KUZU_SYNC_DATASETS)`);
  const work = tempDir("conformance");
  const bundleFile = (name) => path.join(work, `${name}.bundle`);

  // a. Native CLI replica A: the dataset's schema, its CSVs loaded as replicated ops, a bundle.
  const a = path.join(work, "a");
  cli("init", a, "--peer-id", "loader");
  cli("schema", a, path.join(ds, "schema.cypher"));
  const loaded = JSON.parse(cli("load", a, path.join(ds, "copy.cypher")));
  cli("export", a, "--out", bundleFile("a"));
  const bundle = new Uint8Array(fs.readFileSync(bundleFile("a")));

  // b. Plain Kuzu: the dataset's own scripts, COPY reading the CSVs where they are.
  const plain = nativeDb();
  for (const s of statements(path.join(ds, "schema.cypher"))) await plain.rows(s);
  for (const s of statements(path.join(ds, "copy.cypher"))) {
    await plain.rows(s.replace(/FROM "/, `FROM "${ds}/`));
  }
  const plainReader = reader("plain Kuzu", (q) => plain.rows(q));
  const tables = await tablesOf(plainReader);
  assert.ok(
    tables.every((t) => !t.name.startsWith("_ks_")),
    "plain Kuzu has no kuzu-sync tables",
  );
  const want = await dump(plainReader, tables);
  const total = Object.values(want).reduce((n, rows) => n + rows.length, 0);
  assert.equal(total, loaded.rows, "plain COPY and `kuzu-sync load` read as many rows");
  assert.ok(total > 40, `only ${total} rows`);

  // c. A JS replica on native `kuzu` and one on `kuzu-wasm`, each importing A's bundle.
  const n = nativeDb();
  const w = await wasmDb();
  const jsNative = await Replica.open({ kuzu: n.conn, peerId: "js-kuzu" });
  const jsWasm = await Replica.open({ kuzu: w.conn, peerId: "js-wasm" });
  const stA = JSON.parse(cli("status", a));
  for (const r of [jsNative, jsWasm]) {
    const res = await r.importBundle(bundle);
    assert.deepEqual([res.applied, res.duplicates], [stA.version_vector.loader, 0], r.peerId);
    assert.deepEqual((await r.status()).versionVector, stA.version_vector, r.peerId);
  }

  // d. Every table, every column, as Kuzu's text: the JS replicas equal plain Kuzu.
  //    The replicas' schemas are plain Kuzu's plus kuzu-sync's own, all named `_ks_…`,
  //    which the dump never reads: the tables `_ks_meta` (watermark, peer id, offline
  //    mark) and, on a JS host, `_ks_log` (the event log) and, once snapshots land there,
  //    `_ks_snapshot`; and on every rel table the column `_ks_eid STRING` (the edge key,
  //    ARCHITECTURE.md "Identity"). No other column.
  const replicas = [
    reader("CLI replica A", async (q) => cliRows(a, q)),
    reader("JS replica on kuzu", (q) => n.rows(q)),
    reader("JS replica on kuzu-wasm", (q) => w.rows(q)),
  ];
  for (const r of replicas) {
    const theirs = await tablesOf(r);
    const internal = theirs.filter((t) => t.name.startsWith("_ks_")).map((t) => t.name);
    for (const name of r.name.startsWith("JS") ? ["_ks_log", "_ks_meta"] : ["_ks_meta"]) {
      assert.ok(internal.includes(name), `${r.name}: no ${name} among ${internal}`);
    }
    const visible = theirs
      .filter((t) => !t.name.startsWith("_ks_"))
      .map((t) => ({ ...t, columns: t.columns.filter((c) => !c.name.startsWith("_ks_")) }));
    assert.deepEqual(visible, tables, `${r.name}: the schema, but kuzu-sync's own columns`);
    for (const t of theirs.filter((t) => !t.name.startsWith("_ks_"))) {
      const extra = t.columns.filter((c) => c.name.startsWith("_ks_"));
      assert.deepEqual(extra, t.kind === "REL" ? [{ name: "_ks_eid", type: "STRING" }] : [], `${r.name}: ${t.name}`);
    }
  }
  //    The one documented loss of a JS host (ARCHITECTURE.md, "JavaScript and WASM", "One
  //    loss", decided): TIMESTAMP_NS reaches Kuzu through its text form, which Kuzu 0.11
  //    reads to the microsecond. It cannot show here: tinysnb's only TIMESTAMP_NS values
  //    (movies.description.release_ns, `…:30.1234567` in the CSV) are already cut to the
  //    microsecond by plain Kuzu's own COPY, checked next, so every column is compared
  //    exactly, on every replica.
  const description = tables.find((t) => t.name === "movies").columns.findIndex((c) => c.name === "description");
  const releaseNs = want.movies.map((row) => /release_ns: ([^,]*),/.exec(row[description])[1]).sort();
  assert.deepEqual(releaseNs, ["2011-02-11 16:44:22.123456", "2011-08-20 11:25:30.123456", "2018-11-13 13:33:11.123456"]);
  for (const r of replicas) assert.ok(compare(r.name, tables, await dump(r, tables), want) > 40);

  // e. The other way: each JS replica's bundle into a fresh native CLI replica, whose
  //    tables, read by `kuzu-sync query`, equal plain Kuzu's exactly.
  for (const [name, r] of [
    ["c", jsNative],
    ["d", jsWasm],
  ]) {
    const dir = path.join(work, name);
    cli("init", dir, "--peer-id", `native-${name}`);
    fs.writeFileSync(bundleFile(name), await r.exportBundle());
    const res = JSON.parse(cli("import", dir, bundleFile(name)));
    assert.equal(res.applied, stA.version_vector.loader, `CLI replica ${name}`);
    const label = `CLI replica ${name.toUpperCase()} (from the JS replica ${r.peerId})`;
    assert.ok(compare(label, tables, await dump(reader(label, async (q) => cliRows(dir, q)), tables), want) > 40);
  }

  await jsNative.close();
  await jsWasm.close();
  await n.close();
  await w.close();
  await plain.close();
});

// SPEC §2's examples give wall-clock times (10:00:00, 10:00:01, …). A replica reads the clock
// through Date.now() when it writes or imports, so each such call runs at a stated time.
const realNow = Date.now;
async function at(ms, f) {
  Date.now = () => ms;
  try {
    return await f();
  } finally {
    Date.now = realNow;
  }
}
/** 10:00:00 (UTC, an arbitrary day) plus `s` seconds. */
const T = (s) => Date.UTC(2024, 5, 1, 10, 0, 0) + s * 1000;

const SPEC2_SETUP = [
  { op: "ddl", cypher: "CREATE NODE TABLE User(id STRING, email STRING, PRIMARY KEY(id))" },
  { op: "ddl", cypher: "CREATE NODE TABLE Product(id INT64, name STRING, stock INT64, PRIMARY KEY(id))" },
  { op: "ddl", cypher: "CREATE REL TABLE Follows(FROM User TO User, since INT64)" },
  { op: "set_policy", table: "Product", prop: "stock", policy: "counter" },
  ...["user_123", "tie_1", "tie_2", "gone", "x", "e", "f", "g", "caus"].map((id) => ({
    op: "add_node",
    table: "User",
    props: { id, email: `${id}@old` },
  })),
  { op: "add_node", table: "Product", props: { id: 1, name: "widget", stock: 100 } },
  { op: "add_edge", table: "Follows", from: "f", to: "e", props: { since: 1 } },
  { op: "add_edge", table: "Follows", from: "f", to: "g", props: { since: 2 } },
];

/** The graph of the SPEC §2 scenario, every value as text (the hosts type numbers differently). */
async function spec2Graph(db) {
  return {
    users: await db.rows("MATCH (u:User) RETURN u.id AS id, u.email AS email ORDER BY id"),
    products: await db.rows(
      "MATCH (p:Product) RETURN CAST(p.id AS STRING) AS id, p.name AS name, CAST(p.stock AS STRING) AS stock",
    ),
    follows: await db.rows(
      "MATCH (a:User)-[f:Follows]->(b:User) RETURN a.id AS src, b.id AS dst, CAST(f.since AS STRING) AS since " +
        "ORDER BY src, dst",
    ),
  };
}

function conflictOn(list, entity, property) {
  const found = list.filter((c) => c.entity === entity && c.property === property);
  assert.equal(found.length, 1, `one conflict on ${entity}.${property}: ${JSON.stringify(list)}`);
  return found[0];
}

const side = (c) => ({ winner: c.winner.event, loser: c.loser.event });

for (const order of ["node_a imports first", "node_b imports first"]) {
  test(`SPEC §2 examples (${order})`, TIMEOUT, async () => {
    const n = nativeDb();
    const w = await wasmDb();
    const a = await Replica.open({ kuzu: n.conn, peerId: "node_a" });
    const b = await Replica.open({ kuzu: w.conn, peerId: "node_b" });
    await at(T(-60), () => a.write(SPEC2_SETUP));
    await at(T(-59), async () => b.importBundle(await a.exportBundle()));
    const write = async (r, s, ops) => (await at(T(s), () => r.write(ops))).ids[0];
    const email = (key, value) => [{ op: "update", table: "User", key, prop: "email", value }];
    const stock = (delta) => [{ op: "increment", table: "Product", key: 1, prop: "stock", delta }];

    // Concurrent writes: neither replica has seen the other's.
    // Concurrent update: node_a at 10:00:00, node_b at 10:00:01; the later timestamp wins.
    const a123 = await write(a, 0, email("user_123", "alice@a.com"));
    const b123 = await write(b, 1, email("user_123", "alice@b.com"));
    // Ties (the same hybrid timestamp on both) break by peer id, whichever wrote first.
    const aTie1 = await write(a, 2, email("tie_1", "from node_a"));
    const bTie1 = await write(b, 2, email("tie_1", "from node_b"));
    const bTie2 = await write(b, 3, email("tie_2", "from node_b"));
    const aTie2 = await write(a, 3, email("tie_2", "from node_a"));
    // Counter: concurrent stock += -5 and stock += -3 give a total delta of -8.
    const aInc = await write(a, 4, stock(-5));
    const bInc = await write(b, 4, stock(-3));
    // A delete wins over a concurrent update, even a later one: no resurrection.
    const aGone = await write(a, 5, [{ op: "delete_node", table: "User", key: "gone" }]);
    const bGone = await write(b, 6, email("gone", "updated after the delete"));
    // Add wins over a concurrent delete, even a later one; the delete still counts as a
    // later write of "unset" to each property (ARCHITECTURE.md, "Resolution"): email NULL.
    const bX = await write(b, 7, [{ op: "add_node", table: "User", props: { id: "x", email: "re-added" } }]);
    const aX = await write(a, 7.5, [{ op: "delete_node", table: "User", key: "x" }]);
    // The same for an edge: the re-add is later, so its property shows.
    await write(a, 8, [{ op: "delete_edge", table: "Follows", from: "f", to: "g" }]);
    await write(b, 8.5, [{ op: "add_edge", table: "Follows", from: "f", to: "g", props: { since: 99 } }]);
    // Deleting a node removes the edges it had seen (f→e); an edge added concurrently
    // (g→e) is hidden while the node is deleted.
    await write(a, 9, [{ op: "delete_node", table: "User", key: "e" }]);
    await write(b, 9.5, [{ op: "add_edge", table: "Follows", from: "g", to: "e", props: { since: 3 } }]);

    // Both ways, in this test's order.
    const toA = async () => a.importBundle(await b.exportBundle((await a.status()).versionVector));
    const toB = async () => b.importBundle(await a.exportBundle((await b.status()).versionVector));
    await at(T(10), async () => {
      const [first, second] = order.startsWith("node_a") ? [toA, toB] : [toB, toA];
      assert.ok((await first()).applied > 0);
      assert.ok((await second()).applied > 0);
    });
    assert.deepEqual((await a.status()).versionVector, (await b.status()).versionVector);
    const expected = {
      users: [
        { id: "caus", email: "caus@old" },
        { id: "f", email: "f@old" },
        { id: "g", email: "g@old" },
        { id: "tie_1", email: "from node_b" },
        { id: "tie_2", email: "from node_b" },
        { id: "user_123", email: "alice@b.com" },
        { id: "x", email: null },
      ],
      products: [{ id: "1", name: "widget", stock: "92" }],
      follows: [{ src: "f", dst: "g", since: "99" }],
    };
    assert.deepEqual(await spec2Graph(n), expected, "node_a (kuzu)");
    assert.deepEqual(await spec2Graph(w), expected, "node_b (kuzu-wasm)");

    // Delivered again, whole, both ways: all duplicates; no increment counts twice.
    await at(T(11), async () => {
      for (const [from, to] of [
        [a, b],
        [b, a],
      ]) {
        const again = await to.importBundle(await from.exportBundle());
        assert.equal(again.applied, 0);
        assert.ok(again.duplicates > 0);
      }
    });
    assert.deepEqual(await spec2Graph(n), expected, "node_a (kuzu), after a second delivery");
    assert.deepEqual(await spec2Graph(w), expected, "node_b (kuzu-wasm), after a second delivery");

    // Conflict records: type, strategy, winner, loser, entity and property.
    for (const [name, r] of [
      ["node_a", a],
      ["node_b", b],
    ]) {
      const list = await r.conflicts();
      const lww = [
        ["User(user_123)", b123, a123, "alice@b.com", "alice@a.com"],
        ["User(tie_1)", bTie1, aTie1, "from node_b", "from node_a"],
        ["User(tie_2)", bTie2, aTie2, "from node_b", "from node_a"],
      ];
      for (const [entity, winner, loser, won, lost] of lww) {
        const c = conflictOn(list, entity, "email");
        assert.deepEqual(
          [c.type, c.strategy, c.winner, c.loser, c.resolved],
          ["concurrent_update", "last_write_wins", { event: winner, value: won }, { event: loser, value: lost }, won],
          `${name}: ${entity}`,
        );
      }
      const counter = conflictOn(list, "Product(1)", "stock");
      assert.deepEqual([counter.type, counter.strategy], ["concurrent_update", "cumulative"], name);
      assert.deepEqual([counter.winner.event, counter.loser.event].sort(), [aInc, bInc].sort(), name);
      const added = conflictOn(list, "User(x)", null);
      assert.deepEqual(
        [added.type, added.strategy, side(added)],
        ["add_delete", "add_wins", { winner: bX, loser: aX }],
        name,
      );
    }
    // Records are observational (ARCHITECTURE.md): the delete/update one is made where
    // the update arrives after the delete, on node_a.
    const deleted = conflictOn(await a.conflicts(), "User(gone)", "email");
    assert.deepEqual(
      [deleted.type, deleted.strategy, side(deleted)],
      ["delete_update", "delete_wins", { winner: aGone, loser: bGone }],
    );

    // Causality beats clocks: node_a writes at 10:05:00; node_b, whose clock says 10:01:01,
    // writes after seeing it and wins, on both; and that is no conflict.
    await at(T(300), () => a.write(email("caus", "written at 10:05:00")));
    await at(T(60), async () => b.importBundle(await a.exportBundle((await b.status()).versionVector)));
    await at(T(61), () => b.write(email("caus", "written after it, at 10:01:01")));
    await at(T(301), toA);
    // Re-adding e shows the concurrent edge g→e again, not f→e, which the delete had seen.
    await at(T(302), () => a.write([{ op: "add_node", table: "User", props: { id: "e", email: "back" } }]));
    await at(T(303), toB);
    expected.users.splice(0, 1, { id: "caus", email: "written after it, at 10:01:01" }, { id: "e", email: "back" });
    expected.follows.push({ src: "g", dst: "e", since: "3" });
    expected.follows.sort((x, y) => (x.src + x.dst < y.src + y.dst ? -1 : 1));
    assert.deepEqual(await spec2Graph(n), expected, "node_a (kuzu)");
    assert.deepEqual(await spec2Graph(w), expected, "node_b (kuzu-wasm)");
    for (const r of [a, b]) {
      assert.deepEqual(
        (await r.conflicts()).filter((c) => c.entity === "User(caus)"),
        [],
        `${r.peerId}: a causally later write is no conflict`,
      );
    }
    assert.deepEqual((await a.status()).versionVector, (await b.status()).versionVector);

    await a.close();
    await b.close();
    await n.close();
    await w.close();
  });
}

test("SPEC §4 offline example", TIMEOUT, async () => {
  const hubDir = path.join(tempDir("conformance-hub"), "hub");
  cli("init", hubDir, "--peer-id", "hub");
  const port = await freePort();
  let hub = await startHub(hubDir, port);
  try {
    await spec4(hubDir, port, () => {
      const h = hub;
      hub = null;
      return stopHub(h);
    });
  } finally {
    if (hub) await stopHub(hub);
  }
});

/** The body of the SPEC §4 test, with a hub listening on `port`; `stop()` stops it. */
async function spec4(hubDir, port, stop) {
  const url = `ws://127.0.0.1:${port}/sync`;
  const n = nativeDb();
  const w = await wasmDb();
  const a = await Replica.open({ kuzu: n.conn, peerId: "node_a" });
  const b = await Replica.open({ kuzu: w.conn, peerId: "node_b" });
  const seen = { node_a: [], node_b: [] };
  for (const r of [a, b]) {
    for (const type of ["sync", "conflict"]) r.addEventListener(type, (e) => seen[r.peerId].push(e.detail));
  }
  const errors = [];
  for (const r of [a, b]) r.addEventListener("error", (e) => errors.push(`${r.peerId}: ${e.detail.reason}`));
  const graph = async (db) => ({
    users: await db.rows("MATCH (u:User) RETURN u.name AS name, u.status AS status ORDER BY name"),
    follows: await db.rows("MATCH (x:User)-[:Follows]->(y:User) RETURN x.name AS src, y.name AS dst ORDER BY src, dst"),
  });
  const status = async (db, name) =>
    (await db.rows(`MATCH (u:User) WHERE u.name = '${name}' RETURN u.status AS status`))[0].status;

  // The schema of adapters/cli/tests/net.rs: `status` resolves by `online_wins`.
  await a.write([
    { op: "ddl", cypher: "CREATE NODE TABLE User(name STRING, visits INT64, status STRING, PRIMARY KEY (name))" },
    { op: "ddl", cypher: "CREATE REL TABLE Follows(FROM User TO User, since INT64)" },
    { op: "set_policy", table: "User", prop: "visits", policy: "counter" },
    { op: "set_policy", table: "User", prop: "status", policy: "online_wins" },
    { op: "add_node", table: "User", props: { name: "user_1", visits: 0 } },
    { op: "add_node", table: "User", props: { name: "user_2", visits: 0 } },
  ]);
  await a.sync(url);
  await b.sync(url);

  // Offline, three writes go into the queue; the application reads them at once.
  await a.goOffline();
  await a.write([{ op: "add_node", table: "User", props: { name: "Bob" } }]);
  await a.write([{ op: "add_edge", table: "Follows", from: "user_1", to: "user_2" }]);
  await a.write([{ op: "update", table: "User", key: "user_1", prop: "status", value: "active" }]);
  const queued = await a.queueStatus();
  assert.deepEqual([queued.offline, queued.queued, queued.capacity], [true, 3, 10_000]);
  assert.ok(queued.estimatedSizeBytes > 0 && queued.estimatedSizeBytes < 1024 * 1024, `${queued.estimatedSizeBytes}`);
  const offlineGraph = {
    users: [
      { name: "Bob", status: null },
      { name: "user_1", status: "active" },
      { name: "user_2", status: null },
    ],
    follows: [{ src: "user_1", dst: "user_2" }],
  };
  assert.deepEqual(await graph(n), offlineGraph);

  // Back online: the queue is empty, the sync sends the 3 operations, no conflict.
  await a.goOnline();
  assert.deepEqual(await a.queueStatus(), { offline: false, queued: 0, estimatedSizeBytes: 0, capacity: 10_000 });
  seen.node_a.length = 0;
  await a.sync(url);
  assert.deepEqual(
    seen.node_a.filter((e) => e.event === "sync").map((e) => e.sending),
    [3],
    "synced_operations = 3",
  );
  assert.deepEqual(await a.conflicts(), [], "conflicts_resolved = 0");
  await b.sync(url);
  assert.deepEqual(await graph(w), offlineGraph);

  // Offline conflict: node_a, offline, sets inactive; node_b, online, sets banned first,
  // which reaches the hub (and is sealed) before node_a's write, later by the clock.
  await a.goOffline();
  const banned = (await b.write([{ op: "update", table: "User", key: "user_1", prop: "status", value: "banned" }]))
    .ids[0];
  await b.sync(url);
  await new Promise((r) => setTimeout(r, 20));
  const inactive = (
    await a.write([{ op: "update", table: "User", key: "user_1", prop: "status", value: "inactive" }])
  ).ids[0];
  assert.equal((await a.queueStatus()).queued, 1);
  assert.equal(await status(n, "user_1"), "inactive", "provisional while offline");
  await a.goOnline();
  seen.node_a.length = 0;
  seen.node_b.length = 0;
  await a.sync(url);
  await b.sync(url);
  await a.sync(url); // the hub's last seal
  // Nothing a hub sends after a one-shot sync completed is an error (its seal was, once).
  assert.deepEqual(errors, []);
  // online_wins: banned, everywhere.
  assert.equal(await status(n, "user_1"), "banned", "node_a (kuzu)");
  assert.equal(await status(w, "user_1"), "banned", "node_b (kuzu-wasm)");
  assert.deepEqual(await graph(n), await graph(w));
  for (const [name, r] of [
    ["node_a", a],
    ["node_b", b],
  ]) {
    const last = (await r.conflicts()).filter((c) => c.strategy === "online_wins").at(-1);
    assert.ok(last, `${name}: an online_wins conflict`);
    assert.deepEqual(
      [last.type, last.entity, last.property, last.winner.event, last.loser.event, last.resolved],
      ["concurrent_update", "User(user_1)", "status", banned, inactive, "banned"],
      name,
    );
    assert.ok(
      seen[name].some((e) => e.event === "conflict" && e.conflict.strategy === "online_wins"),
      `${name}: a conflict event`,
    );
  }
  const vv = (await a.status()).versionVector;
  assert.deepEqual((await b.status()).versionVector, vv);
  await stop();
  const hubStatus = JSON.parse(cli("status", hubDir));
  assert.deepEqual(hubStatus.version_vector, vv);
  assert.deepEqual(
    cliRows(hubDir, "MATCH (u:User) RETURN u.name AS name, u.status AS status ORDER BY name"),
    await graph(n).then((g) => g.users),
    "the hub",
  );

  // The queue holds 10,000 operations; past that a clear error, and nothing queued is lost.
  await a.goOffline();
  const many = Array.from({ length: 10_000 }, (_, i) => ({ op: "add_node", table: "User", props: { name: `q${i}` } }));
  await a.write(many);
  assert.equal((await a.queueStatus()).queued, 10_000);
  await assert.rejects(
    a.write([{ op: "add_node", table: "User", props: { name: "one too many" } }]),
    /offline queue is full/,
  );
  assert.equal((await a.queueStatus()).queued, 10_000);
  assert.deepEqual(await n.rows("MATCH (u:User) WHERE u.name STARTS WITH 'q' RETURN count(*) AS c"), [{ c: 10_000 }]);
  assert.deepEqual(await n.rows("MATCH (u:User) WHERE u.name = 'one too many' RETURN u.name"), []);

  await a.close();
  await b.close();
  await n.close();
  await w.close();
}
