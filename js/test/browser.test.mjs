// The browser: Debian's Chromium, headless, driven by puppeteer-core, opens
// examples/browser (kuzu-wasm's browser build persisted to IndexedDB) from a plain HTTP
// server. Two pages (separate storage) and a native CLI replica converge through a real
// hub; reloading a page keeps its graph and its log.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";
import { tempDir, cli, cliWrite, cliRows, freePort, startHub, stopHub, CHROMIUM, serveStatic } from "./helpers.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
async function openPage(context, base, peer, log) {
  const page = await context.newPage();
  page.on("console", (m) => log.push(`${peer} console: ${m.text()}`));
  page.on("pageerror", (e) => log.push(`${peer} error: ${e.message}`));
  await page.goto(`${base}/examples/browser/index.html?peer=${peer}`);
  await page.waitForFunction("window.kuzuSyncReady === true", { timeout: 90_000 });
  return page;
}

const USERS = "MATCH (u:User) RETURN u.name AS name ORDER BY name";

test("two browser pages and a CLI replica converge through a hub; a reload keeps the data", { timeout: 300_000 }, async () => {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)`);
  const hubDir = path.join(tempDir("browser-hub"), "hub");
  cli("init", hubDir, "--peer-id", "hub");
  const hubPort = await freePort();
  const hubUrl = `ws://127.0.0.1:${hubPort}/sync`;
  const hub = await startHub(hubDir, hubPort);
  const webPort = await freePort();
  const server = await serveStatic(ROOT, webPort);
  const base = `http://127.0.0.1:${webPort}`;
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const log = [];
  try {
    const ctx1 = browser.defaultBrowserContext();
    let p1 = await openPage(ctx1, base, "browser-1", log);
    await p1.evaluate(async () => {
      await window.kuzuSync.replica.write([
        { op: "ddl", cypher: "CREATE NODE TABLE User(name STRING, age INT64, PRIMARY KEY(name))" },
        { op: "add_node", table: "User", props: { name: "Alice", age: 9007199254740993n } },
        { op: "add_node", table: "User", props: { name: "Bob" } },
      ]);
    });
    await p1.evaluate((url) => window.kuzuSync.replica.sync(url), hubUrl);

    // A native replica gets the page's writes, exactly, and writes back.
    const c = path.join(tempDir("browser-cli"), "c");
    cli("init", c, "--peer-id", "cli-1");
    cli("sync", c, "--remote", hubUrl);
    assert.deepEqual(cliRows(c, "MATCH (u:User) RETURN u.name AS name, CAST(u.age AS STRING) AS age ORDER BY name"), [
      { name: "Alice", age: "9007199254740993" },
      { name: "Bob", age: null },
    ]);
    cliWrite(c, [{ op: "add_node", table: "User", props: { name: "Carol", age: 3 } }]);
    cli("sync", c, "--remote", hubUrl);

    // A second page, with its own storage, syncs everything down.
    const ctx2 = await browser.createBrowserContext();
    const p2 = await openPage(ctx2, base, "browser-2", log);
    await p2.evaluate((url) => window.kuzuSync.replica.sync(url), hubUrl);
    const names = ["Alice", "Bob", "Carol"].map((name) => ({ name }));
    assert.deepEqual(await p2.evaluate((q) => window.kuzuSync.rows(q), USERS), names);

    // The first page syncs again, then reloads: graph and log come back from IndexedDB.
    await p1.evaluate((url) => window.kuzuSync.replica.sync(url), hubUrl);
    const before = await p1.evaluate(() => window.kuzuSync.replica.status());
    assert.deepEqual(before.versionVector, { "browser-1": 3, "cli-1": 1 });
    await p1.reload();
    await p1.waitForFunction("window.kuzuSyncReady === true", { timeout: 90_000 });
    assert.deepEqual(await p1.evaluate((q) => window.kuzuSync.rows(q), USERS), names);
    assert.deepEqual(await p1.evaluate(() => window.kuzuSync.replica.status()), before);
    // And it keeps writing where its log ends.
    const out = await p1.evaluate(() =>
      window.kuzuSync.replica.write([{ op: "update", table: "User", key: "Bob", prop: "age", value: 41 }]),
    );
    assert.deepEqual(out.ids, ["browser-1:4"]);
    p1 = null;
    await ctx2.close();
  } catch (e) {
    throw new Error(`${e.message}\npage log:\n${log.join("\n")}\nhub log:\n${hub.log()}`);
  } finally {
    await browser.close();
    server.close();
    await stopHub(hub);
  }
});
