// Live sync with a real hub (`kuzu-sync serve` on loopback): a JS replica on native kuzu,
// one on kuzu-wasm and a native CLI replica converge; live changes stream both ways; a
// dropped hub is reconnected to; a wrong token is refused.
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
  until,
  ALL_TYPES_QUERY,
  SCHEMA,
  PEOPLE,
} from "./helpers.mjs";

test("JS replicas on kuzu and kuzu-wasm and a CLI replica converge through a hub", { timeout: 120_000 }, async () => {
  const hubDir = path.join(tempDir("hub"), "hub");
  cli("init", hubDir, "--peer-id", "hub");
  const port = await freePort();
  const url = `ws://127.0.0.1:${port}/sync`;
  const hub = await startHub(hubDir, port);
  try {
    const n = nativeDb();
    const w = await wasmDb();
    const a = await Replica.open({ kuzu: n.conn, peerId: "node-1" });
    const b = await Replica.open({ kuzu: w.conn, peerId: "wasm-1" });
    const seen = [];
    for (const type of ["connect", "eose", "disconnect"]) a.addEventListener(type, () => seen.push(type));
    const errors = [];
    a.addEventListener("error", (e) => errors.push(e.detail.reason));

    // One-shot: a's writes go up; b gets them.
    await a.write([...SCHEMA, ...PEOPLE]);
    const res = await a.sync(url);
    assert.equal(res.peer, "hub");
    // What the hub sends after the one-shot sync completed (its seal) is not an error.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(errors, []);
    await b.sync(url);
    assert.deepEqual(await w.rows(ALL_TYPES_QUERY), await n.rows(ALL_TYPES_QUERY));
    assert.ok(seen.includes("connect") && seen.includes("eose"), seen.join(","));

    // Live: both watch; writes on either side and on a CLI replica reach everyone.
    await a.sync(url, { watch: true });
    await b.sync(url, { watch: true });
    const changes = [];
    b.addEventListener("change", (e) => changes.push(e.detail.tables));
    await a.write([{ op: "update", table: "Person", key: "Carol", prop: "score", value: 3.5 }]);
    await b.write([{ op: "add_node", table: "Person", props: { name: "Wes", big: 7n } }]);
    const c = path.join(tempDir("cli"), "c");
    cli("init", c, "--peer-id", "cli-1");
    cli("sync", c, "--remote", url);
    cliWrite(c, [{ op: "add_edge", table: "Knows", from: "Carol", to: "Wes", props: { since: 1 } }]);
    cli("sync", c, "--remote", url);
    await until("a and b to hold the CLI's edge and each other's writes", async () => {
      const edges = await n.rows("MATCH (:Person)-[k:Knows]->(:Person) RETURN count(*) AS c");
      const edgesW = await w.rows("MATCH (:Person)-[k:Knows]->(:Person) RETURN count(*) AS c");
      return (
        Number(edges[0].c) === 2 &&
        Number(edgesW[0].c) === 2 &&
        JSON.stringify(await n.rows(ALL_TYPES_QUERY)) === JSON.stringify(await w.rows(ALL_TYPES_QUERY)) &&
        (await n.rows(ALL_TYPES_QUERY)).length === 4
      );
    });
    cli("sync", c, "--remote", url);
    assert.deepEqual(await n.rows(ALL_TYPES_QUERY), cliRows(c, ALL_TYPES_QUERY));
    assert.ok(changes.some((t) => t.includes("Person")), JSON.stringify(changes));
    assert.deepEqual((await a.status()).versionVector, (await b.status()).versionVector);

    // The hub goes away and comes back: a reconnects by itself and catches up.
    await stopHub(hub);
    const hub2 = await startHub(hubDir, port);
    try {
      cliWrite(c, [{ op: "update", table: "Person", key: "Wes", prop: "score", value: 9.25 }]);
      cli("sync", c, "--remote", url);
      await until("a to reconnect and get the CLI's update", async () => {
        const r = await n.rows("MATCH (p:Person) WHERE p.name = 'Wes' RETURN CAST(p.score AS STRING) AS s");
        return r[0].s === "9.250000";
      });
    } finally {
      a.stopSync();
      b.stopSync();
      await a.close();
      await b.close();
      await n.close();
      await w.close();
      await stopHub(hub2);
    }
  } catch (e) {
    hub.hub.kill("SIGKILL");
    throw new Error(`${e.message}\nhub log:\n${hub.log()}`);
  }
});

test("a hub that refuses the token rejects the sync with its reason", { timeout: 60_000 }, async () => {
  const hubDir = path.join(tempDir("hub-auth"), "hub");
  cli("init", hubDir, "--peer-id", "hub");
  const tokenFile = path.join(path.dirname(hubDir), "token");
  fs.writeFileSync(tokenFile, "right-token\n");
  const port = await freePort();
  const hub = await startHub(hubDir, port, ["--auth-token-file", tokenFile]);
  const n = nativeDb();
  const a = await Replica.open({ kuzu: n.conn, peerId: "node-1" });
  try {
    await assert.rejects(a.sync(`ws://127.0.0.1:${port}/sync`, { token: "wrong" }), /auth/);
    await assert.rejects(a.sync("ftp://127.0.0.1:1/sync"), /sync needs a ws:\/\/, wss:\/\/, http:\/\/ or https:\/\/ URL, got "ftp/);
    await a.write(SCHEMA);
    await a.sync(`ws://127.0.0.1:${port}/sync`, { token: "right-token" });
    // Another replica gets a's events through the hub.
    const m = nativeDb();
    const b = await Replica.open({ kuzu: m.conn, peerId: "node-2" });
    await b.sync(`ws://127.0.0.1:${port}/sync`, { token: "right-token" });
    assert.deepEqual((await b.status()).versionVector, { "node-1": 2 });
    await b.close();
    await m.close();
  } finally {
    await a.close();
    await n.close();
    await stopHub(hub);
  }
});

test("sync over HTTP push/pull, one-shot and live", { timeout: 120_000 }, async () => {
  const hubDir = path.join(tempDir("hub-http"), "hub");
  cli("init", hubDir, "--peer-id", "hub");
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/sync`;
  const hub = await startHub(hubDir, port);
  const n = nativeDb();
  const w = await wasmDb();
  const a = await Replica.open({ kuzu: n.conn, peerId: "node-1" });
  const b = await Replica.open({ kuzu: w.conn, peerId: "wasm-1" });
  try {
    await a.write([...SCHEMA, ...PEOPLE]);
    assert.equal((await a.sync(url)).peer, "hub");
    await b.sync(url, { watch: true });
    assert.deepEqual(await w.rows(ALL_TYPES_QUERY), await n.rows(ALL_TYPES_QUERY));
    // Live: a one-shot push from a reaches b through its held poll, and b's write goes up.
    await a.write([{ op: "update", table: "Person", key: "Bob", prop: "score", value: 4.75 }]);
    await a.sync(url);
    await until("b to get a's update over its poll", async () => {
      const r = await w.rows("MATCH (p:Person) WHERE p.name = 'Bob' RETURN CAST(p.score AS STRING) AS s");
      return r[0].s === "4.750000";
    });
    await b.write([{ op: "add_node", table: "Person", props: { name: "Hal" } }]);
    await until("a to get b's write through the hub", async () => {
      await a.sync(url);
      return (await n.rows("MATCH (p:Person) WHERE p.name = 'Hal' RETURN p.name")).length === 1;
    });
    assert.deepEqual(await w.rows(ALL_TYPES_QUERY), await n.rows(ALL_TYPES_QUERY));
  } catch (e) {
    throw new Error(`${e.message}\nhub log:\n${hub.log()}`);
  } finally {
    b.stopSync();
    await a.close();
    await b.close();
    await n.close();
    await w.close();
    await stopHub(hub);
  }
});

test("a hostile hub's oversized answers are refused before they are buffered", { timeout: 60_000 }, async () => {
  const http = await import("node:http");
  const { WebSocketServer } = await import("ws");
  // HTTP: every answer is 2 MiB (the hub's bodies are at most 1 MiB).
  const big = Buffer.alloc(2 << 20, 7);
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(200).end(big));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  // WebSocket: one 1 MiB message (the hub cuts frames into 64 KiB messages).
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.on("listening", r));
  wss.on("connection", (ws) => ws.send(Buffer.alloc(1 << 20, 7)));
  const n = nativeDb();
  const a = await Replica.open({ kuzu: n.conn, peerId: "node-1" });
  try {
    await assert.rejects(a.sync(`http://127.0.0.1:${server.address().port}/sync`), /over the limit of 1048576/);
    await assert.rejects(a.sync(`ws://127.0.0.1:${wss.address().port}/sync`), /Max payload size exceeded/);
    assert.deepEqual((await a.status()).versionVector, {});
  } finally {
    await a.close();
    await n.close();
    server.close();
    wss.close();
  }
});
