// kuzu-sync in a browser page: the page's own kuzu-wasm database, persisted to IndexedDB
// through kuzu-wasm's IDBFS, replicated through a hub over WebSocket. Serve the `js/`
// directory (with its node_modules) over HTTP and open examples/browser/index.html; the
// query string may set `peer` (default browser-1).
//
// window.kuzuSync is what the browser test (test/browser.test.mjs) drives.
import kuzu from "../../node_modules/kuzu-wasm/sync/index.js";
import { Replica } from "../../index.js";

const params = new URLSearchParams(location.search);
const out = document.getElementById("out");

await kuzu.init();
const FS = kuzu.getFS();
try {
  FS.mkdir("/data");
} catch {
  // already there
}
FS.mount(FS.filesystems.IDBFS, {}, "/data");
const syncfs = (populate) =>
  new Promise((resolve, reject) => FS.syncfs(populate, (e) => (e ? reject(e) : resolve())));
await syncfs(true); // IndexedDB -> the in-memory files

const db = new kuzu.Database("/data/app.kuzu");
const conn = new kuzu.Connection(db);
const replica = await Replica.open({
  kuzu: conn,
  peerId: params.get("peer") ?? "browser-1",
  afterCommit: () => syncfs(false), // the in-memory files -> IndexedDB, after each commit
});

function rows(cypher) {
  const r = conn.query(cypher);
  if (!r.isSuccess()) throw new Error(r.getErrorMessage());
  const all = r.getAllObjects();
  r.close();
  return all;
}

async function show() {
  const status = await replica.status();
  let users = [];
  try {
    users = rows("MATCH (u:User) RETURN u.name AS name ORDER BY name").map((r) => r.name);
  } catch {
    // no User table yet
  }
  out.textContent = JSON.stringify({ status, users }, null, 2);
}

replica.addEventListener("change", show);
document.getElementById("add").onclick = async () => {
  await replica.write([
    { op: "ddl", cypher: "CREATE NODE TABLE IF NOT EXISTS User(name STRING, PRIMARY KEY(name))" },
    { op: "add_node", table: "User", props: { name: document.getElementById("name").value } },
  ]);
  await show();
};
document.getElementById("sync").onclick = () =>
  replica.sync(document.getElementById("hub").value, { watch: true }).then(show, (e) => (out.textContent = e.message));

window.kuzuSync = { replica, rows, show };
await show();
window.kuzuSyncReady = true;
