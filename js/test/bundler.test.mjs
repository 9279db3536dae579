// A bundler: the package as npm packs it, installed in an application that imports it by
// name beside kuzu-wasm, built with Vite, served as static files and run in Debian's
// Chromium (headless, puppeteer-core). The build must emit the core's .wasm as an asset
// and pull no Node-only module into the bundle; the page writes on one replica and moves
// the write to another as a bundle.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";
import { build } from "vite";
import { tempDir, freePort, CHROMIUM, serveStatic } from "./helpers.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** An application directory with kuzu-sync installed from its packed tarball. */
function application() {
  const dir = tempDir("bundler-app");
  const out = execFileSync("npm", ["pack", "--silent", "--pack-destination", dir], { cwd: ROOT })
    .toString()
    .trim()
    .split("\n")
    .pop();
  const pkg = path.join(dir, "node_modules", "kuzu-sync");
  fs.mkdirSync(pkg, { recursive: true });
  execFileSync("tar", ["xzf", path.join(dir, out), "-C", pkg, "--strip-components=1"]);
  fs.symlinkSync(path.join(ROOT, "node_modules", "kuzu-wasm"), path.join(dir, "node_modules", "kuzu-wasm"));
  for (const f of ["index.html", "main.js"]) {
    fs.copyFileSync(path.join(ROOT, "examples", "bundler", f), path.join(dir, f));
  }
  return dir;
}

/** Every file under `dir`, relative. */
function files(dir) {
  return fs.readdirSync(dir, { recursive: true }).filter((f) => fs.statSync(path.join(dir, f)).isFile());
}

test("an application bundled with Vite runs kuzu-sync in the browser", { timeout: 300_000 }, async () => {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)`);
  const app = application();
  const dist = path.join(app, "dist");
  await build({ root: app, configFile: false, logLevel: "error", build: { outDir: dist, emptyOutDir: true } });

  const built = files(dist);
  const ours = fs.readFileSync(path.join(app, "node_modules/kuzu-sync/wasm/kuzu_sync_wasm_bg.wasm"));
  const wasm = built.filter((f) => f.endsWith(".wasm"));
  assert.ok(
    wasm.some((f) => fs.readFileSync(path.join(dist, f)).equals(ours)),
    `the core's .wasm is emitted as an asset: ${built.join(", ")}`,
  );
  const js = built.filter((f) => f.endsWith(".js")).map((f) => fs.readFileSync(path.join(dist, f), "utf8"));
  assert.ok(js.length > 0, "a bundle is built");
  // Nothing Node-only was pulled in: neither a stub for a Node builtin (Vite's marker for
  // one) nor the `ws` package (its extension's name).
  for (const nodeOnly of ["__vite-browser-external", "permessage-deflate"]) {
    assert.ok(!js.some((t) => t.includes(nodeOnly)), `the bundle holds ${nodeOnly}`);
  }

  const port = await freePort();
  const server = await serveStatic(dist, port);
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const log = [];
  try {
    const page = await browser.newPage();
    page.on("console", (m) => log.push(`console: ${m.text()}`));
    page.on("pageerror", (e) => log.push(`error: ${e.message}`));
    page.on("requestfailed", (r) => log.push(`failed: ${r.url()}`));
    await page.goto(`http://127.0.0.1:${port}/index.html`);
    await page.waitForFunction("window.result !== undefined", { timeout: 120_000 });
    const result = await page.evaluate("window.result");
    assert.equal(result.error, undefined, `${result.error}\n${log.join("\n")}`);
    assert.deepEqual(
      result.users.map((u) => [u.name, Number(u.age)]),
      [
        ["Alice", 30],
        ["Bob", 41],
      ],
    );
    assert.equal(result.imported.applied, 3, JSON.stringify(result.imported));
    assert.match(result.refused, /unknown table "Nope"/);
    assert.ok(result.memory > 0 && result.heap > 0 && result.heap <= result.memory, JSON.stringify(result));
  } finally {
    await browser.close();
    server.close();
  }
});
