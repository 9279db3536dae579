// Types of the kuzu-sync package (index.js).

/** An op: the objects of `kuzu-sync write`'s JSON lines, DDL included. */
export type Op =
  | { op: "ddl"; cypher: string }
  | { op: "add_node"; table: string; props: Record<string, unknown> }
  | {
      op: "add_edge";
      table: string;
      from: unknown;
      to: unknown;
      key?: string;
      from_table?: string;
      to_table?: string;
      props?: Record<string, unknown>;
    }
  | { op: "update"; table: string; key?: unknown; from?: unknown; to?: unknown; prop: string; value: unknown }
  | { op: "increment"; table: string; key: unknown; prop: string; delta: number | bigint }
  | { op: "delete_node"; table: string; key: unknown }
  | { op: "delete_edge"; table: string; from: unknown; to: unknown; key?: string }
  | { op: "set_policy"; table: string; [field: string]: unknown }
  | { op: "seal" };

/** What each peer's events a replica holds: `{peerId: counter}`. */
export type VersionVector = Record<string, number>;

/** A Connection of the `kuzu` package or of `kuzu-wasm`. */
export type KuzuConnection = object;

export interface OpenOptions {
  /** The application's own connection. */
  kuzu: KuzuConnection;
  /** Required for a new database; an existing one remembers its own. */
  peerId?: string;
  /** Runs after each commit (in the browser: kuzu-wasm's `FS.syncfs` to IndexedDB). */
  afterCommit?: () => void | Promise<void>;
}

export interface WriteResult {
  /** The new events' ids, `peer:counter`. */
  ids: string[];
  applied: number;
}

export interface ImportResult {
  applied: number;
  duplicates: number;
  conflicts: number;
  /**
   * Events the bundle's snapshot stands for, if it started from one that this replica
   * installed (its state replaced, every table rebuilt); 0 otherwise.
   */
  snapshotEvents: number;
}

export interface Status {
  peerId: string;
  versionVector: VersionVector;
  storedEvents: number;
  schemaVersion: number;
  nodes: number;
  edges: number;
  conflicts: number;
  /**
   * Received events held until every part of their coordinated transaction is here (kept
   * in memory on a JS replica: a reload fetches them again by sync).
   */
  heldEvents: number;
  offline: boolean;
}

export interface QueueStatus {
  offline: boolean;
  queued: number;
  estimatedSizeBytes: number;
  capacity: number;
}

export interface SyncOptions {
  /** Keep the connection open (live changes both ways) and reconnect after failures. */
  watch?: boolean;
  /** The hub's auth token (`serve --auth-token-file` or a credential's token). */
  token?: string;
}

export interface SyncResult {
  /** The hub's peer id. */
  peer: string;
}

/** A conflict as `kuzu-sync conflicts` prints it. */
export interface Conflict {
  type: string;
  strategy: string;
  entity: string;
  property: string | null;
  winner: unknown;
  loser: unknown;
  resolved: string | null;
  [field: string]: unknown;
}

/**
 * Events (each an `Event` with a `detail`): `change` ({tables}), `conflict` ({count} after
 * a write or import; the engine's conflict record from a sync), and from `sync`:
 * `connect`, `sync`, `eose`, `outdated`, `refused`, `strategy`, `disconnect`, `error`
 * (the engine's lifecycle event, as the CLI prints it).
 */
export class Replica extends EventTarget {
  static open(options: OpenOptions): Promise<Replica>;
  readonly peerId: string;
  write(ops: Op[]): Promise<WriteResult>;
  importBundle(bytes: Uint8Array): Promise<ImportResult>;
  exportBundle(since?: VersionVector): Promise<Uint8Array>;
  status(): Promise<Status>;
  conflicts(): Promise<Conflict[]>;
  queueStatus(): Promise<QueueStatus>;
  goOffline(): Promise<void>;
  goOnline(): Promise<void>;
  /**
   * Syncs with a hub over `ws://`, `wss://`, `http://` or `https://` (push/pull); resolves
   * once both sides are caught up.
   */
  sync(url: string, options?: SyncOptions): Promise<SyncResult>;
  stopSync(): void;
  close(): Promise<void>;
}

/**
 * The WASM core's memory in bytes, shared by every replica of this module: its high-water
 * mark (WASM memory never shrinks). 0 before the first `Replica.open`.
 */
export function wasmMemoryBytes(): Promise<number>;

/**
 * The WASM core's live heap in bytes, shared by every replica of this module: what its
 * allocations hold now (below `wasmMemoryBytes()`). 0 before the first `Replica.open`.
 */
export function wasmHeapBytes(): Promise<number>;
