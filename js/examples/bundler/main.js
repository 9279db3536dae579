// kuzu-sync as an application bundles it: imported by package name, built with Vite
// (`npx vite build examples/bundler`, with `kuzu-sync` and `kuzu-wasm` installed). Two
// in-memory kuzu-wasm databases in one page: a write on the first replica goes to the
// second as a bundle. window.result is what the bundler test (test/bundler.test.mjs) reads.
import kuzu from "kuzu-wasm/sync";
import { Replica, wasmHeapBytes, wasmMemoryBytes } from "kuzu-sync";

function rows(conn, cypher) {
  const r = conn.query(cypher);
  if (!r.isSuccess()) throw new Error(r.getErrorMessage());
  const all = r.getAllObjects();
  r.close();
  return all;
}

async function main() {
  await kuzu.init();
  const connA = new kuzu.Connection(new kuzu.Database("/a.kuzu"));
  const connB = new kuzu.Connection(new kuzu.Database("/b.kuzu"));
  const a = await Replica.open({ kuzu: connA, peerId: "bundled-a" });
  const b = await Replica.open({ kuzu: connB, peerId: "bundled-b" });
  await a.write([
    { op: "ddl", cypher: "CREATE NODE TABLE User(name STRING, age INT64, PRIMARY KEY(name))" },
    { op: "add_node", table: "User", props: { name: "Alice", age: 30 } },
    { op: "add_node", table: "User", props: { name: "Bob", age: 41 } },
  ]);
  const imported = await b.importBundle(await a.exportBundle());
  let refused = null;
  try {
    await b.write([{ op: "add_node", table: "Nope", props: {} }]);
  } catch (e) {
    refused = e.message;
  }
  return {
    users: rows(connB, "MATCH (u:User) RETURN u.name AS name, CAST(u.age AS STRING) AS age ORDER BY name"),
    imported,
    refused,
    status: await b.status(),
    memory: await wasmMemoryBytes(),
    heap: await wasmHeapBytes(),
  };
}

const out = document.getElementById("out");
main().then(
  (result) => {
    window.result = result;
    out.textContent = JSON.stringify(result, null, 2);
  },
  (e) => {
    window.result = { error: String((e && e.stack) || e) };
    out.textContent = window.result.error;
  },
);
