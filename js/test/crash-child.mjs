// Child of crash.test.mjs: opens the replica in DIR and imports each bundle file given, in
// order, printing "imported N" after each commit, until killed.
import fs from "node:fs";
import path from "node:path";
import kuzu from "kuzu";
import { Replica } from "../index.js";

const [dir, ...bundles] = process.argv.slice(2);
const db = new kuzu.Database(path.join(dir, "app.kuzu"));
const conn = new kuzu.Connection(db);
const replica = await Replica.open({ kuzu: conn, peerId: "crashy" });
process.stdout.write("open\n");
for (const [i, file] of bundles.entries()) {
  await replica.importBundle(new Uint8Array(fs.readFileSync(file)));
  process.stdout.write(`imported ${i}\n`);
}
await replica.close();
await conn.close();
await db.close();
