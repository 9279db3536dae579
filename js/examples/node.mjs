// The README's example: a Node app replicating its own Kuzu database.
//   node examples/node.mjs [DIR]     (DIR: where the database goes, default a temp dir)
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import kuzu from "kuzu";
import { Replica } from "kuzu-sync";

const dir = process.argv[2] ?? fs.mkdtempSync(path.join(os.tmpdir(), "kuzu-sync-example-"));
const db = new kuzu.Database(path.join(dir, "app.kuzu"));
const conn = new kuzu.Connection(db);

const replica = await Replica.open({ kuzu: conn, peerId: "laptop-1" });
replica.addEventListener("change", (e) => console.log("changed:", e.detail.tables.join(", ")));
await replica.write([
  { op: "ddl", cypher: "CREATE NODE TABLE IF NOT EXISTS User(name STRING, age INT64, PRIMARY KEY(name))" },
  { op: "add_node", table: "User", props: { name: "Alice", age: 30 } },
]);

// The application reads with its own connection.
const result = await conn.query("MATCH (u:User) RETURN u.name AS name, u.age AS age");
console.log(await result.getAll());
result.close();

// A bundle another replica (JS or `kuzu-sync import`) can import.
const bundle = await replica.exportBundle();
fs.writeFileSync(path.join(dir, "laptop-1.bundle"), bundle);
console.log("status:", JSON.stringify(await replica.status()));
console.log(`bundle: ${bundle.length} bytes in ${path.join(dir, "laptop-1.bundle")}`);

await replica.close();
await conn.close();
await db.close();
