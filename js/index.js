// kuzu-sync for JavaScript: replicates the application's own Kuzu database (the `kuzu`
// npm package, or `kuzu-wasm`) with the engine compiled to WASM.
//
// The WASM core decides: it checks ops and bundles, resolves conflicts and returns a plan
// (DDL, then one transaction holding the log rows, the graph statements and the
// watermark). This file executes the plan on the application's connection and confirms it.
// If the plan cannot be committed, the core is rebuilt from the log in the database, so a
// failed write or import leaves nothing behind. See ARCHITECTURE.md, "JavaScript and WASM".

import init, {
  initSync,
  Core,
  CoreLoader,
  setupStatements,
  logExtentQuery,
  readLogPageQuery,
  logPage,
  readSnapshotQuery,
  readMetaQuery,
  writeMetaStatement,
  memoryBytes,
  heapBytes,
} from "./wasm/kuzu_sync_wasm.js";

const PEER_RE = /^[A-Za-z0-9_.-]{1,64}$/;

let loading = null;

/**
 * Imports a module only Node has (`node:fs`, `ws`). The name is not a literal, so bundlers
 * leave the import to run time instead of pulling the module into a browser build.
 */
function nodeImport(name) {
  return import(/* webpackIgnore: true */ /* @vite-ignore */ name);
}

/** Loads the WASM core once (Node: from the package's file; browsers: fetched). */
function loadCore() {
  if (loading === null) {
    loading = (async () => {
      // A literal `new URL(…, import.meta.url)`: bundlers (Vite, webpack 5, Parcel) find it
      // and emit the .wasm beside the bundle.
      const url = new URL("./wasm/kuzu_sync_wasm_bg.wasm", import.meta.url);
      if (typeof process !== "undefined" && process.versions && process.versions.node) {
        const fs = await nodeImport("node:fs/promises");
        initSync({ module: await fs.readFile(url) });
      } else {
        await init({ module_or_path: url });
      }
    })();
  }
  return loading;
}

/**
 * The WASM core's memory in bytes, shared by every replica of this module: its high-water
 * mark (WASM memory never shrinks). 0 before the first `Replica.open`.
 */
export async function wasmMemoryBytes() {
  if (loading === null) return 0;
  await loading;
  return memoryBytes();
}

/**
 * The WASM core's live heap in bytes, shared by every replica of this module: what its
 * allocations hold now (below `wasmMemoryBytes()`). 0 before the first `Replica.open`.
 */
export async function wasmHeapBytes() {
  if (loading === null) return 0;
  await loading;
  return heapBytes();
}

// ---------------------------------------------------------------- the two Kuzu hosts

function rowsOf(result) {
  return Array.isArray(result) ? result[result.length - 1] : result;
}

/** `kuzu` (native addon): errors are thrown; results are read with getAll(). */
function nativeHost(conn) {
  const finish = async (result) => {
    const all = Array.isArray(result) ? result : [result];
    try {
      return await rowsOf(all).getAll();
    } finally {
      for (const r of all) r.close();
    }
  };
  return {
    kind: "kuzu",
    async run(cypher) {
      return finish(await conn.query(cypher));
    },
    async exec(cypher, params, cache) {
      let ps = cache?.get(cypher);
      if (ps === undefined) {
        ps = await conn.prepare(cypher);
        if (!ps.isSuccess()) throw new Error(ps.getErrorMessage());
        cache?.set(cypher, ps);
      }
      return finish(await conn.execute(ps, params));
    },
    async release(_cache) {},
  };
}

/** `kuzu-wasm` (sync or async build): errors are in the result, not thrown. */
function wasmHost(conn) {
  const finish = async (result) => {
    try {
      if (!(await result.isSuccess())) throw new Error(await result.getErrorMessage());
      return await result.getAllObjects();
    } finally {
      await result.close();
    }
  };
  return {
    kind: "kuzu-wasm",
    async run(cypher) {
      return finish(await conn.query(cypher));
    },
    async exec(cypher, params, cache) {
      let ps = cache?.get(cypher);
      if (ps === undefined) {
        ps = await conn.prepare(cypher);
        if (!(await ps.isSuccess())) {
          const message = await ps.getErrorMessage();
          if (typeof ps.close === "function") await ps.close();
          throw new Error(message);
        }
        if (!cache) {
          try {
            return await finish(await conn.execute(ps, params));
          } finally {
            if (typeof ps.close === "function") await ps.close();
          }
        }
        cache.set(cypher, ps);
      }
      return finish(await conn.execute(ps, params));
    },
    /** Closes the statements a transaction prepared (kuzu-wasm frees them by hand). */
    async release(cache) {
      for (const ps of cache.values()) if (typeof ps.close === "function") await ps.close();
      cache.clear();
    },
  };
}

function hostFor(conn) {
  if (conn && typeof conn.querySync === "function" && typeof conn.prepareSync === "function") {
    return nativeHost(conn);
  }
  if (conn && typeof conn.query === "function" && typeof conn.prepare === "function") {
    return wasmHost(conn);
  }
  throw new TypeError(
    "options.kuzu must be a Connection of the `kuzu` or `kuzu-wasm` package, got " +
      describe(conn),
  );
}

function describe(v) {
  if (v === null) return "null";
  if (typeof v === "object") return (v.constructor && v.constructor.name) || "an object";
  return typeof v;
}

// ---------------------------------------------------------------- values

/** An op as a JSON line; bigints become exact JSON integers. */
function opLine(op, i) {
  if (op === null || typeof op !== "object" || Array.isArray(op)) {
    throw new TypeError(`op ${i}: an op must be an object like {op: "add_node", ...}, got ${describe(op)}`);
  }
  const marks = [];
  // JSON.stringify cannot write a bigint: each becomes a marked string, then its digits.
  const text = JSON.stringify(op, (_k, v) => {
    if (typeof v === "bigint") {
      marks.push(v.toString());
      return `\u0000bigint${marks.length - 1}`;
    }
    return v;
  });
  return text.replace(/"\\u0000bigint(\d+)"/g, (_m, n) => marks[Number(n)]);
}

function firstValue(row) {
  if (row === undefined) return undefined;
  const v = Object.values(row)[0];
  return v === null || v === undefined ? undefined : String(v);
}

class ReplicaEvent extends Event {
  constructor(type, detail) {
    super(type);
    this.detail = detail;
  }
}

// ---------------------------------------------------------------- the replica

/** The WebSocket class: the platform's, or the `ws` package in Node 20 (which has none). */
async function webSocketClass() {
  if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket;
  const ws = await nodeImport("ws");
  return ws.WebSocket ?? ws.default;
}

const MAX_BACKOFF_MS = 30_000;
// What the hub sends at most, and so what a client takes at most, before anything is
// decoded (the frame decoder in WASM bounds frames on top of this):
// one WebSocket message (`WS_CHUNK`, protocol/src/link.rs: frames are cut into such
// messages), and one HTTP answer (`MAX_BODY`, protocol/src/http.rs).
const WS_MAX_MESSAGE = 64 << 10;
/**
 * A `CHECKPOINT` after this many committed transactions without one, as the native store
 * does: Kuzu 0.11.3 keeps what small transactions commit in its buffer pool until a
 * checkpoint, and checkpoints by itself only at 16 MB of WAL, so one-node writes filled a
 * 64 MiB pool after about 7,000 ("The buffer pool is full").
 */
const CHECKPOINT_EVERY = 1000;
const HTTP_MAX_BODY = 1 << 20;

/** Reads a response body, refusing it past `max` bytes before buffering more. */
async function readBounded(res, max, what) {
  const declared = Number(res.headers.get("content-length") ?? "0");
  if (declared > max) throw new Error(`${what}: a body of ${declared} bytes, over the limit of ${max}`);
  const reader = res.body.getReader();
  const parts = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel();
      throw new Error(`${what}: a body over the limit of ${max} bytes`);
    }
    parts.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * The hub's HTTP push/pull transport (PROTOCOL.md; `protocol/src/http.rs`) behind the
 * WebSocket interface the sync code uses (`onopen`, `onmessage`, `onclose`, `send`,
 * `close`): pushes go out in order, numbered; one poll is held open at a time. Any
 * failure ends the session (a `watch` sync then reconnects with a new one).
 */
class HttpLink {
  constructor(url) {
    this.url = url;
    this.id = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
    this.seq = 0;
    this.poll = 0;
    this.ended = false;
    this.pushes = Promise.resolve();
    this.abort = new AbortController();
    setTimeout(() => {
      if (this.ended) return;
      this.onopen?.();
      this.#pollLoop();
    }, 0);
  }

  async #post(headers, body) {
    const res = await fetch(this.url, {
      method: "POST",
      headers: { "x-kuzu-sync-session": this.id, ...headers },
      body,
      signal: this.abort.signal,
    });
    const bytes = res.body ? await readBounded(res, HTTP_MAX_BODY, this.url) : new Uint8Array(0);
    if (!res.ok) {
      throw new Error(`${this.url} answered ${res.status}: ${new TextDecoder().decode(bytes).slice(0, 200)}`);
    }
    return bytes;
  }

  send(bytes) {
    const seq = ++this.seq;
    this.pushes = this.pushes
      .then(() => (this.ended ? undefined : this.#post({ "x-kuzu-sync-seq": String(seq) }, bytes)))
      .catch((e) => this.#end(e.message));
  }

  async #pollLoop() {
    try {
      while (!this.ended) {
        const poll = ++this.poll;
        const body = await this.#post({ "x-kuzu-sync-poll": String(poll), "x-kuzu-sync-wait-ms": "25000" });
        if (body.length > 0 && !this.ended) this.onmessage?.({ data: body });
      }
    } catch (e) {
      this.#end(e.message);
    }
  }

  close() {
    if (this.ended) return;
    const seq = ++this.seq;
    // Tell the hub (best effort), after the pushes before it.
    this.pushes.then(() =>
      fetch(this.url, {
        method: "POST",
        headers: { "x-kuzu-sync-session": this.id, "x-kuzu-sync-seq": String(seq), "x-kuzu-sync-close": "1" },
      }).catch(() => {}),
    );
    this.#end("closed");
  }

  #end(reason) {
    if (this.ended) return;
    this.ended = true;
    this.abort.abort();
    this.onclose?.({ reason });
  }
}

/**
 * A replica of the graph in the application's own Kuzu database. An `EventTarget`:
 * `change` (detail: {tables}), `conflict` (detail: {count} after a write or import, or
 * {conflict} from a sync), and from `sync`: `connect`, `sync`, `eose`, `outdated`,
 * `refused`, `disconnect`, `error` (detail: the engine's lifecycle event).
 */
export class Replica extends EventTarget {
  #host;
  #peer;
  #core = null;
  #queue = Promise.resolve();
  #closed = false;
  #afterCommit;
  /** Transactions committed since the last checkpoint (see CHECKPOINT_EVERY). */
  #sinceCheckpoint = 0;
  #link = null;
  /** The socket whose session the core runs (a closing older one must not end it). */
  #sessionSocket = null;

  constructor(host, peer, afterCommit) {
    super();
    this.#host = host;
    this.#peer = peer;
    this.#afterCommit = afterCommit;
  }

  /**
   * Opens a replica on `options.kuzu` (a Connection of `kuzu` or `kuzu-wasm`). A new
   * database needs `peerId`; an existing one remembers it (a different one is refused).
   * `afterCommit` (optional, async) runs after each commit: in the browser, kuzu-wasm's
   * `FS.syncfs` to persist to IndexedDB.
   */
  static async open(options) {
    if (options === null || typeof options !== "object") {
      throw new TypeError("Replica.open needs an options object: {kuzu, peerId}");
    }
    const { kuzu, peerId, afterCommit } = options;
    if (peerId !== undefined && (typeof peerId !== "string" || !PEER_RE.test(peerId))) {
      throw new Error(
        `peer id ${JSON.stringify(peerId)} is not valid: 1-64 characters of A-Z a-z 0-9 _ . -`,
      );
    }
    if (afterCommit !== undefined && typeof afterCommit !== "function") {
      throw new TypeError("options.afterCommit must be a function");
    }
    const host = hostFor(kuzu);
    await loadCore();
    for (const s of JSON.parse(setupStatements())) await host.run(s);
    const stored = await readMeta(host, "peer_id");
    if (stored !== undefined && peerId !== undefined && stored !== peerId) {
      throw new Error(`this database belongs to peer "${stored}", not "${peerId}"`);
    }
    if (stored === undefined && peerId === undefined) {
      throw new Error("this database has no replica yet: give a peerId to create one");
    }
    if (stored === undefined) {
      await host.exec(writeMetaStatement(), { k: "peer_id", v: peerId });
      if (afterCommit) await afterCommit();
    }
    const replica = new Replica(host, stored ?? peerId, afterCommit);
    await replica.#reopen();
    return replica;
  }

  /** This replica's peer id. */
  get peerId() {
    return this.#peer;
  }

  /**
   * Opens a new core from the log, the snapshot and the marks in the database. If a graph
   * rebuild was interrupted (a snapshot was stored, its rows not yet), finishes it first;
   * if that fails, the core refuses work and the next call tries again.
   */
  async #reopen() {
    const parts = await this.#host.run(readSnapshotQuery());
    const snapshot = parts.length > 0 ? parts.map((r) => String(Object.values(r)[0])).join("") : undefined;
    const rebuilding = (await readMeta(this.#host, "graph_rebuild")) === "1";
    const mark = await readMeta(this.#host, "offline_mark");
    const capacity = await readMeta(this.#host, "queue_capacity");
    const loader = new CoreLoader(
      this.#peer,
      snapshot,
      rebuilding,
      mark === undefined || mark === "" ? undefined : Number(mark),
      capacity === undefined ? undefined : Number(capacity),
    );
    try {
      // The log in pages: neither side ever holds all of it as text.
      const [extent] = await this.#host.run(logExtentQuery());
      const top = extent ? Object.values(extent)[1] : null;
      const end = top === null || top === undefined ? 0 : Number(top) + 1;
      const page = logPage();
      for (let from = 0; from < end; from += page) {
        const rows = await this.#host.run(readLogPageQuery(from, Math.min(from + page, end)));
        loader.push(rows.map((r) => String(Object.values(r)[0])));
      }
    } catch (e) {
      loader.free();
      throw asError(e);
    }
    const core = loader.finish();
    if (this.#core) this.#core.free();
    this.#core = core;
    const plan = JSON.parse(core.recoveryPlan());
    try {
      await this.#run(plan);
    } catch (e) {
      core.abort(String(e && e.message));
      throw asError(e);
    }
    if (plan.data.length > 0) {
      core.confirm();
      if (this.#afterCommit) await this.#afterCommit();
    }
  }

  /** Runs `f` after every earlier call: one writer at a time, as Kuzu requires. */
  #serial(f) {
    const run = this.#queue.then(() => {
      if (this.#closed) throw new Error("the replica is closed");
      return f();
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Asks the core for a plan; if the failure left the core unusable, reopens it. */
  async #plan(f) {
    try {
      return JSON.parse(f(this.#core));
    } catch (e) {
      if (this.#core.isDead()) await this.#reopen();
      throw asError(e);
    }
  }

  /** Statements in one transaction. */
  async #transaction(statements) {
    if (statements.length === 0) return;
    // Statements of one shape (an edge each, say) are parsed and planned once.
    const prepared = new Map();
    await this.#host.run("BEGIN TRANSACTION");
    try {
      for (const s of statements) await this.#host.exec(s.cypher, s.params, prepared);
      await this.#host.run("COMMIT");
    } catch (e) {
      // Kuzu rolls a failed transaction back itself; this is for the other failures.
      await this.#host.run("ROLLBACK").catch(() => {});
      throw e;
    } finally {
      await this.#host.release(prepared);
    }
    // Committed whatever happens here; a checkpoint that fails (Kuzu waits for open
    // transactions, the application's included) is tried again after the next commit.
    this.#sinceCheckpoint += 1;
    if (this.#sinceCheckpoint >= CHECKPOINT_EVERY) {
      await this.#host.run("CHECKPOINT").then(
        () => (this.#sinceCheckpoint = 0),
        () => {},
      );
    }
  }

  /**
   * Runs a plan: the log rewrite of a snapshot install (with the graph-rebuild mark) in
   * its own transaction, then the DDL, then the rows, the log's new rows and the
   * watermark in one transaction.
   */
  async #run(plan) {
    await this.#transaction(plan.before);
    for (const s of plan.ddl) await this.#host.run(s);
    await this.#transaction(plan.data);
  }

  /** Commits a plan (nothing if it is empty) and confirms it to the core. */
  async #commit(plan) {
    if (plan.before.length === 0 && plan.ddl.length === 0 && plan.data.length === 0) return;
    try {
      await this.#run(plan);
    } catch (e) {
      this.#core.abort(String(e && e.message));
      this.#dropLink();
      await this.#reopen();
      throw asError(e);
    }
    this.#core.confirm();
    if (this.#afterCommit) await this.#afterCommit();
    if (plan.tables.length > 0) this.#emit("change", { tables: plan.tables });
  }

  #emit(type, detail) {
    this.dispatchEvent(new ReplicaEvent(type, detail));
  }

  /** After a local change: streams it to the hub, if connected. */
  async #streamLocal() {
    const link = this.#link;
    if (link && link.socket && link.open) await this.#carry(link, this.#core.syncLocalChanged(Date.now()));
  }

  /**
   * Writes ops (the objects of `kuzu-sync write`'s JSON lines, DDL included) as one atomic
   * write. Resolves to `{ids, applied}`. A refused op throws, naming it; nothing is applied.
   */
  write(ops) {
    return this.#serial(async () => {
      if (!Array.isArray(ops)) throw new TypeError(`write takes an array of ops, got ${describe(ops)}`);
      const lines = ops.map(opLine).join("\n");
      const plan = await this.#plan((core) => core.write(lines, Date.now()));
      await this.#commit(plan);
      await this.#streamLocal();
      return plan.outcome;
    });
  }

  /**
   * Imports a bundle (the CLI's format). Resolves to `{applied, duplicates, conflicts}`.
   * All or nothing.
   */
  importBundle(bytes) {
    return this.#serial(async () => {
      if (!(bytes instanceof Uint8Array)) {
        throw new TypeError(`importBundle takes a Uint8Array, got ${describe(bytes)}`);
      }
      const plan = await this.#plan((core) => core.importBundle(bytes, Date.now()));
      await this.#commit(plan);
      if (plan.outcome.conflicts > 0) this.#emit("conflict", { count: plan.outcome.conflicts });
      await this.#streamLocal();
      return plan.outcome;
    });
  }

  /**
   * A bundle of this replica's events that `since` (a version vector, `{peer: counter}`)
   * lacks; all of them without it. A `Uint8Array` in the CLI's bundle format.
   */
  exportBundle(since) {
    return this.#serial(async () => {
      let vv;
      if (since !== undefined && since !== null) {
        if (typeof since !== "object" || Array.isArray(since)) {
          throw new TypeError(`since must be a version vector like {"laptop-1": 3}, got ${describe(since)}`);
        }
        vv = JSON.stringify(since);
      }
      try {
        return this.#core.exportBundle(vv);
      } catch (e) {
        throw asError(e);
      }
    });
  }

  /** `{peerId, versionVector, storedEvents, schemaVersion, nodes, edges, conflicts, offline}`. */
  status() {
    return this.#serial(async () => JSON.parse(this.#core.status()));
  }

  /** The conflicts resolved since the replica was opened, as `kuzu-sync conflicts` prints them. */
  conflicts() {
    return this.#serial(async () => JSON.parse(this.#core.conflicts()));
  }

  /** `{offline, queued, estimatedSizeBytes, capacity}`. */
  queueStatus() {
    return this.#serial(async () => JSON.parse(this.#core.queueStatus()));
  }

  /** Goes offline: own writes count against the offline queue's capacity. Durable. */
  goOffline() {
    return this.#serial(async () => {
      const mark = this.#core.goOffline();
      if (mark === undefined) return;
      try {
        await this.#host.exec(writeMetaStatement(), { k: "offline_mark", v: String(mark) });
        if (this.#afterCommit) await this.#afterCommit();
      } catch (e) {
        await this.#reopen();
        throw asError(e);
      }
    });
  }

  /** Goes back online. Durable. */
  goOnline() {
    return this.#serial(async () => {
      await this.#host.exec(writeMetaStatement(), { k: "offline_mark", v: "" });
      if (this.#afterCommit) await this.#afterCommit();
      this.#core.goOnline();
    });
  }

  // -------------------------------------------------------------- live sync

  /**
   * Syncs with a hub (`kuzu-sync serve`) over WebSocket (`ws://`, `wss://`) or HTTP
   * push/pull (`http://`, `https://`: for networks that pass only HTTP). Resolves
   * once both sides hold what the other held at the handshake, with `{peer}`. Without
   * `watch` the connection then closes; with it, it stays open (live changes both ways)
   * and reconnects after a failure with exponential backoff (jittered, at most 30 s)
   * until `stopSync()` or `close()`. `token`: the hub's auth token.
   */
  sync(url, options = {}) {
    if (typeof url !== "string" || !/^(wss?|https?):\/\/[^\s]+$/.test(url)) {
      return Promise.reject(
        new Error(`sync needs a ws://, wss://, http:// or https:// URL, got ${JSON.stringify(url)}`),
      );
    }
    const { watch = false, token } = options ?? {};
    if (token !== undefined && typeof token !== "string") {
      return Promise.reject(new TypeError("options.token must be a string"));
    }
    if (this.#closed) return Promise.reject(new Error("the replica is closed"));
    if (this.#link) return Promise.reject(new Error("a sync is already running: stopSync() first"));
    return new Promise((resolve, reject) => {
      const link = { url, token, watch: Boolean(watch), resolve, reject, settled: false, attempts: 0 };
      this.#link = link;
      this.#start(link);
    });
  }

  /** Stops a running sync (closes its connection, no reconnection). */
  stopSync() {
    const link = this.#link;
    if (!link) return;
    link.stopped = true;
    clearTimeout(link.timer);
    if (link.socket) link.socket.close();
    this.#link = null;
    if (!link.settled) {
      link.settled = true;
      link.reject(new Error("sync stopped"));
    }
  }

  #dropLink() {
    const link = this.#link;
    if (link && link.socket) link.socket.close();
  }

  /** Connects; a failure to even start (say, a malformed URL) ends the sync. */
  #start(link) {
    this.#connect(link).catch((e) => {
      if (this.#link === link) this.#link = null;
      this.#settle(link, asError(e));
    });
  }

  async #connect(link) {
    let socket;
    if (/^https?:/.test(link.url)) {
      socket = new HttpLink(link.url);
    } else {
      let WS;
      try {
        WS = await webSocketClass();
      } catch (e) {
        this.#settle(link, new Error(`no WebSocket here (install the ws package in Node 20): ${e.message}`));
        return;
      }
      if (link.stopped) return;
      // The `ws` package takes a bound; a browser's WebSocket has none to set.
      socket = WS === globalThis.WebSocket ? new WS(link.url) : new WS(link.url, { maxPayload: WS_MAX_MESSAGE });
      socket.binaryType = "arraybuffer";
    }
    link.socket = socket;
    link.open = false;
    link.transportError = undefined;
    socket.onopen = () => {
      link.open = true;
      this.#serial(async () => {
        this.#sessionSocket = socket;
        return this.#carry(link, this.#core.syncStart(link.token, Date.now()));
      }).catch((e) => this.#fail(link, e));
    };
    socket.onmessage = (ev) => {
      const bytes = new Uint8Array(ev.data);
      this.#serial(async () => {
        // Messages that were on their way when this connection's session ended (a
        // one-shot sync closes once synced; the hub's seal may still come) or from a
        // socket a reconnect replaced: nobody is listening; the next session starts
        // from vectors again.
        if (link.socket !== socket || this.#sessionSocket !== socket || !link.open || link.stopped) return;
        let step = this.#core.syncReceive(bytes, Date.now());
        let more = await this.#carry(link, step);
        while (more) more = await this.#carry(link, this.#core.syncReceive(new Uint8Array(0), Date.now()));
      }).catch((e) => this.#fail(link, e));
    };
    // The transport's own error (the `ws` package names it, say "Max payload size
    // exceeded"; a browser says nothing), kept for the close that follows.
    socket.onerror = (ev) => {
      if (ev && ev.message) link.transportError = String(ev.message);
    };
    socket.onclose = (ev) => {
      link.open = false;
      // A one-shot sync's socket may finish closing after the next sync started its
      // session: only the socket that owns the session ends it.
      if (!this.#closed && this.#sessionSocket === socket) {
        this.#core.syncEnd();
        this.#sessionSocket = null;
      }
      this.#emit("disconnect", { reason: ev && ev.reason ? String(ev.reason) : "the connection closed" });
      if (link.stopped || this.#closed) return;
      if (!link.watch || link.refused) {
        const reason = (ev && ev.reason) || link.transportError;
        const why = reason ? `: ${reason}` : "";
        this.#settle(link, new Error(link.refused ?? link.error ?? `the connection closed before the sync completed${why}`));
        if (this.#link === link) this.#link = null;
        return;
      }
      // Reconnect with exponential backoff, jittered.
      const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** link.attempts) * (0.5 + Math.random() / 2);
      link.attempts++;
      link.timer = setTimeout(() => this.#start(link), delay);
    };
  }

  #fail(link, e) {
    link.error = asError(e).message;
    this.#emit("error", { reason: link.error });
    if (link.socket) link.socket.close();
  }

  #settle(link, error, value) {
    if (link.settled) return;
    link.settled = true;
    if (error) link.reject(error);
    else link.resolve(value);
  }

  /** Carries out one step of the session, in order; true if more received messages wait. */
  async #carry(link, step) {
    try {
      await this.#commit(JSON.parse(step.plan));
      for (let i = 0; i < step.frameCount; i++) {
        if (canSend(link)) link.socket.send(step.frame(i));
      }
      for (const ev of JSON.parse(step.events)) {
        if (ev.event === "change") continue; // #commit emitted it, with the tables
        if (ev.event === "refused") link.refused = ev.reason;
        if (ev.event === "error") link.error = ev.reason;
        if (ev.event === "connect") {
          link.attempts = 0;
          link.peer = ev.peer;
        }
        this.#emit(ev.event, ev);
      }
      if (step.synced && !link.settled) {
        this.#settle(link, null, { peer: link.peer });
        if (!link.watch) {
          link.stopped = true;
          if (this.#link === link) this.#link = null;
          link.socket.close();
        }
      }
      if (step.close && link.socket) {
        link.open = false;
        link.socket.close();
      }
      return step.more;
    } finally {
      step.free();
    }
  }

  /**
   * Stops any sync, waits for pending work and releases the core. The application's
   * connection and database stay open: they are the application's to close.
   */
  close() {
    this.stopSync();
    return this.#serial(async () => {
      this.#closed = true;
      this.#core.free();
    });
  }
}

/** Whether the link's socket takes frames (a WebSocket that is OPEN, or a live HttpLink). */
function canSend(link) {
  const s = link.socket;
  if (!s || !link.open) return false;
  return s.readyState === undefined ? !s.ended : s.readyState === 1;
}

async function readMeta(host, key) {
  return firstValue((await host.exec(readMetaQuery(), { k: key }))[0]);
}

function asError(e) {
  return e instanceof Error ? e : new Error(String(e));
}
