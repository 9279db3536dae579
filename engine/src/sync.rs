//! Live sync, protocol 1.0: the messages and the per-connection session state machine.
//!
//! Pure: a [`Session`] is fed received [`Message`]s and "the replica changed" ticks, and
//! answers with [`Output`]s (messages to send, lifecycle events, close). It reads and
//! imports through a [`Replica`], so it runs the same over memory, SQLite and Kuzu.
//! Transports, framing and compression live in the `protocol` crate. ARCHITECTURE.md
//! ("Live sync") has the semantics; PROTOCOL.md the wire format.

use serde::{Deserialize, Serialize};

use crate::antientropy::EntityRow;
use crate::clock::{PeerId, VersionVector};
use crate::conflict::Conflict;
use crate::event::{Event, Op};
use crate::merkle::{self, MerkleIndex};
use crate::ports::{EventStore, GraphStore};
use crate::replica::{Replica, ReplicaError};
use crate::schema::Policy;

/// The protocol version this build speaks. Peers must share the major version.
pub const PROTOCOL_VERSION: &str = "1.0";
/// Events per `Events` message.
pub const DEFAULT_BATCH: usize = 4096;
/// Snapshot state bytes per `SnapshotPart` message (frames are limited to 64 MiB).
pub const SNAPSHOT_PART_BYTES: usize = 4 << 20;
/// The most snapshot state a session accepts.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;
/// The capability of taking snapshots (`SnapshotPart`, `sync_mode: snapshot`). A replica
/// behind a compacted log that lacks it is refused, naming what it needs.
pub const CAP_SNAPSHOT: &str = "snapshot";
/// The capability of compressing frames with zstd.
pub const CAP_ZSTD: &str = "zstd";
/// A client capability: this session only asks questions (Merkle diff); no events are
/// exchanged either way.
pub const CAP_NO_EXCHANGE: &str = "no-exchange";

/// A protocol message. New variants may be added in minor versions; a peer that cannot
/// decode one closes the connection with an "unknown message type" error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Client → server, first message.
    Hello(Hello),
    /// Server → client: the session is established.
    Welcome(Welcome),
    /// Server → client: the handshake is refused; the connection closes.
    Refused(Refused),
    /// A batch of events the receiver lacks, in causal order (at most
    /// [`crate::limits::MAX_EVENTS_PER_MESSAGE`], refused while decoding past that).
    Events(#[serde(deserialize_with = "crate::limits::bounded_events")] Vec<Event>),
    /// End of stored events: everything the sender held at the handshake has been sent.
    Eose,
    /// The receiver's version vector after importing.
    Ack(VersionVector),
    /// Part of a snapshot, sent before any event when the receiver lacks events the sender
    /// has compacted away. The receiver installs it once it holds every part.
    SnapshotPart(SnapshotPart),
    /// A fatal error; the sender closes the connection.
    Error(String),
    /// Merkle anti-entropy, request: the asker's entity count (the answerer picks the
    /// bucket bits from the larger of the two counts).
    MerkleSummary {
        len: u64,
    },
    /// Answer: bucket bits, the answerer's entity count and root (32 bytes).
    MerkleSummaryReply {
        bucket_bits: u32,
        len: u64,
        #[serde(with = "serde_bytes")]
        root: Vec<u8>,
    },
    /// Request: for each parent at `level`, its `2^depth` descendants.
    MerkleDescendants {
        level: u32,
        parents: Vec<u32>,
        depth: u32,
    },
    /// Hashes, 32 bytes each, back to back (raw bytes: MessagePack would spend two bytes
    /// on many single bytes of an array).
    MerkleHashes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Request: the fingerprints of these buckets.
    MerkleFingerprints(Vec<u32>),
    /// Per bucket, its 8-byte fingerprints back to back.
    MerkleFingerprintLists(Vec<serde_bytes::ByteBuf>),
    /// Request: the entries at (bucket, position).
    MerkleEntries(Vec<(u32, u32)>),
    /// Entries (16-byte key, 16-byte digest) back to back.
    MerkleEntryList(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Request: the rows of these entity keys (16 bytes each, back to back).
    MerkleRows(#[serde(with = "serde_bytes")] Vec<u8>),
    MerkleRowList(Vec<EntityRow>),
    /// Round-trip measurement: answered at once with `Pong` and the same number.
    Ping(u64),
    Pong(u64),
    /// Two-phase commit, between a coordinator and a participant (after the handshake).
    Tx(crate::tx::WireMsg),
}

/// Whether every item is greater than the one before (so a request names each thing once
/// and its answer is no larger than what it asks about).
fn strictly_ascending<T: Ord>(items: &[T]) -> bool {
    items.windows(2).all(|w| w[0] < w[1])
}

/// Fixed-size items back to back, for the Merkle messages.
pub fn pack<const N: usize>(items: &[[u8; N]]) -> Vec<u8> {
    items.iter().flatten().copied().collect()
}

/// The inverse of [`pack`]; `None` if the length is not a multiple of `N`.
pub fn unpack<const N: usize>(bytes: &[u8]) -> Option<Vec<[u8; N]>> {
    if bytes.len() % N != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(N)
            .map(|c| c.try_into().expect("chunk of N"))
            .collect(),
    )
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Welcome(_) => "welcome",
            Message::Refused(_) => "refused",
            Message::Events(_) => "events",
            Message::Eose => "eose",
            Message::Ack(_) => "ack",
            Message::SnapshotPart(_) => "snapshot_part",
            Message::Error(_) => "error",
            Message::MerkleSummary { .. } => "merkle_summary",
            Message::MerkleSummaryReply { .. } => "merkle_summary_reply",
            Message::MerkleDescendants { .. } => "merkle_descendants",
            Message::MerkleHashes(_) => "merkle_hashes",
            Message::MerkleFingerprints(_) => "merkle_fingerprints",
            Message::MerkleFingerprintLists(_) => "merkle_fingerprint_lists",
            Message::MerkleEntries(_) => "merkle_entries",
            Message::MerkleEntryList(_) => "merkle_entry_list",
            Message::MerkleRows(_) => "merkle_rows",
            Message::MerkleRowList(_) => "merkle_row_list",
            Message::Ping(_) => "ping",
            Message::Pong(_) => "pong",
            Message::Tx(_) => "tx",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub peer: String,
    pub protocol_version: String,
    /// The application's schema version (0 if unset).
    pub schema_version: u64,
    pub capabilities: Vec<String>,
    pub auth_token: Option<String>,
    pub version_vector: VersionVector,
    /// Where the last sync with this server ended, to check before syncing incrementally.
    #[serde(default)]
    pub sync_point: Option<SyncPoint>,
    /// The vector of the snapshot this side's log is compacted into (empty if none).
    #[serde(default)]
    pub compacted: VersionVector,
}

/// One part of a [`crate::snapshot::Snapshot`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    pub version_vector: VersionVector,
    pub event_count: u64,
    pub checksum: [u8; 16],
    /// Length of the whole state; parts arrive in order.
    pub total_bytes: u64,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Where a sync ended: the events both sides held, and a checksum of exactly those.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPoint {
    pub timestamp_ms: u64,
    pub event_count: u64,
    pub version_vector: VersionVector,
    /// XOR of the events' digests (SHA-256 truncated to 128 bits), in hex.
    pub checksum: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub peer: String,
    pub protocol_version: String,
    /// Always `established`.
    pub status: String,
    pub sync_mode: SyncMode,
    pub schema_version: u64,
    /// The capabilities both sides have.
    pub capabilities: Vec<String>,
    pub version_vector: VersionVector,
    /// The client's sync point did not verify here: histories diverged (or this side lost
    /// events), so nothing is assumed and the client follows with a Merkle repair.
    #[serde(default)]
    pub full_resync_required: bool,
    /// The vector of the snapshot this side's log is compacted into (empty if none).
    #[serde(default)]
    pub compacted: VersionVector,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Only what the other side lacks, decided by version vectors.
    Incremental,
    /// The whole history: the other side has nothing to start from.
    Full,
    /// A snapshot, then the events after it: the other side lacks events compacted away.
    Snapshot,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Incremental => "incremental",
            SyncMode::Full => "full",
            SyncMode::Snapshot => "snapshot",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "code")]
pub enum Refused {
    /// The token is missing or wrong.
    Auth { reason: String },
    /// The major protocol versions differ.
    ProtocolVersion { supported: String, got: String },
    /// The client's schema version is older than the hub's.
    Outdated { required: u64, got: u64 },
    /// The peer id is invalid or is the hub's own.
    Peer { reason: String },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Auth { reason } => write!(f, "authentication failed: {reason}"),
            Refused::ProtocolVersion { supported, got } => write!(
                f,
                "protocol version {got:?} is not supported (this side speaks {supported})"
            ),
            Refused::Outdated { required, got } => write!(
                f,
                "schema version {got} is outdated: the hub requires {required} or newer"
            ),
            Refused::Peer { reason } => write!(f, "peer refused: {reason}"),
        }
    }
}

/// How a session sends, chosen from the measured network quality (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Batches of up to the configured size, two in flight, live changes at once.
    Streaming,
    /// Long round trips: batches of at least 1,000 events, four in flight, live changes
    /// gathered (the driver looks for them once a second).
    BatchOptimized,
    /// Little bandwidth: critical tables first (with the causal past they need), the rest
    /// after, one batch in flight.
    PriorityBased,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Streaming => "streaming",
            Strategy::BatchOptimized => "batch_optimized",
            Strategy::PriorityBased => "priority_based",
        }
    }

    fn batch(self, configured: usize) -> usize {
        match self {
            Strategy::BatchOptimized => configured.max(1000),
            _ => configured.max(1),
        }
    }

    fn window(self) -> usize {
        match self {
            Strategy::Streaming => 2,
            Strategy::BatchOptimized => 4,
            Strategy::PriorityBased => 1,
        }
    }
}

/// What the driver measured on the live session.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NetworkQuality {
    pub rtt_ms: f64,
    /// Bits per second.
    pub throughput_bps: f64,
}

/// Under 1 Mbit/s: `priority_based`; else a round trip over 500 ms: `batch_optimized`;
/// else `streaming`.
pub fn choose_strategy(q: &NetworkQuality) -> Strategy {
    if q.throughput_bps < 1_000_000.0 {
        Strategy::PriorityBased
    } else if q.rtt_ms > 500.0 {
        Strategy::BatchOptimized
    } else {
        Strategy::Streaming
    }
}

/// What happened on a session, for users (the CLI prints these as JSON lines).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Lifecycle {
    /// The handshake completed with `peer`.
    Connect {
        peer: String,
        status: &'static str,
        protocol_version: String,
        sync_mode: &'static str,
        full_resync_required: bool,
    },
    /// Stored events are being exchanged with `peer`.
    Sync {
        peer: String,
        sending: usize,
        remote_version_vector: VersionVector,
    },
    /// `peer` has sent all the events it held at the handshake.
    Eose { peer: String },
    /// Events from `peer` were applied here.
    Change {
        peer: String,
        tables: Vec<String>,
        events: usize,
    },
    /// A schema version newer than ours is required (or the peer runs a newer one).
    Outdated { peer: String, required: u64 },
    /// A conflict resolved while applying events from `peer`.
    Conflict { peer: String, conflict: Conflict },
    /// The handshake was refused (by either side).
    Refused { reason: String },
    /// The connection ended without an error message (the other side closed or vanished).
    Disconnect { peer: String, reason: String },
    /// The sending strategy changed, with the measures that decided it.
    Strategy {
        peer: String,
        strategy: &'static str,
        rtt_ms: f64,
        throughput_bps: f64,
    },
    /// A snapshot was sent to `peer` (`sent`) or received from it and installed here
    /// (`installed`): `events` is how many events it stands for.
    Snapshot {
        peer: String,
        direction: &'static str,
        events: u64,
        bytes: u64,
    },
    /// The session failed; the connection closes.
    Error { reason: String },
}

/// What the driver of a session must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send(Message),
    Event(Lifecycle),
    /// Close the connection (after sending what precedes).
    Close,
    /// The answer to our ping with this number arrived (for the driver's RTT).
    Pong(u64),
    /// A transaction message from the remote (`from`, its authenticated peer id), for the
    /// driver's transaction endpoint.
    Tx {
        from: String,
        msg: crate::tx::WireMsg,
    },
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The application schema version of this side.
    pub schema_version: u64,
    /// Client: the token to present. Server: the one token required (None: open hub,
    /// unless `credentials` are set). A session opened with it may claim any peer id and
    /// send any events, like a `relay` credential.
    pub auth_token: Option<String>,
    /// Server: tokens bound to peer ids and roles (see [`crate::auth`]); when set, a hello
    /// must carry one of them, claiming a peer it may claim.
    pub credentials: Option<std::sync::Arc<crate::auth::Credentials>>,
    pub capabilities: Vec<String>,
    pub batch_size: usize,
    /// Server: write a seal after each import that brings events, when the schema has an
    /// `online_wins` property. Hubs do.
    pub seal: bool,
    /// Tables whose events go first when bandwidth is scarce (`priority_based`).
    pub critical_tables: Vec<String>,
    /// Events in a batch sent before anything is measured (one batch in flight then).
    pub probe_batch: usize,
    /// Client: the sync point of the last sync with this server, if any.
    pub sync_point: Option<SyncPoint>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            schema_version: 0,
            auth_token: None,
            credentials: None,
            capabilities: vec![CAP_ZSTD.to_string(), CAP_SNAPSHOT.to_string()],
            batch_size: DEFAULT_BATCH,
            seal: false,
            critical_tables: Vec::new(),
            probe_batch: DEFAULT_BATCH,
            sync_point: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Client: Hello not sent yet. Server: waiting for Hello.
    Start,
    /// Client: Hello sent, waiting for Welcome.
    AwaitWelcome,
    Established,
    Closed,
}

/// One side of one connection.
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    state: State,
    remote: Option<String>,
    /// What the remote holds, as far as we know: its vector at the handshake, joined with
    /// everything sent to it and received from it.
    remote_has: VersionVector,
    /// What the remote has acknowledged holding.
    remote_acked: VersionVector,
    /// Everything we have sent on this session.
    sent: VersionVector,
    capabilities: Vec<String>,
    got_eose: bool,
    sent_eose: bool,
    /// The remote asked for no event exchange (a diff session).
    no_exchange: bool,
    /// Server: the Merkle index of this replica's state, built at the first question.
    merkle: Option<(std::sync::Arc<Vec<EntityRow>>, std::sync::Arc<MerkleIndex>)>,
    /// Events queued to send, in causal order; batches unacknowledged; EOSE still due.
    /// A snapshot being sent, and how many of its bytes have gone out. Parts go out one at
    /// a time, as the driver asks (`Session::poll_send`); events wait until the last one.
    snapshot_out: Option<(std::sync::Arc<crate::snapshot::Snapshot>, usize)>,
    outbox: std::collections::VecDeque<Event>,
    /// Where the next read of the log starts (see `EventStore::scan_page`), and whether
    /// there may be events the remote lacks past it. The outbox holds a read-ahead of
    /// what the window needs, never the whole log.
    cursor: u64,
    unread: bool,
    in_flight: usize,
    eose_due: bool,
    strategy: Strategy,
    /// Whether the driver has measured anything yet.
    measured: bool,
    full_resync_required: bool,
    /// The remote's compaction floor, from the handshake.
    remote_floor: VersionVector,
    /// A snapshot being received: its first part's header and the bytes so far.
    snapshot_in: Option<(SnapshotPart, Vec<u8>)>,
    /// Server with credentials: what the client's token was granted.
    grant: Option<crate::auth::Grant>,
}

impl Session {
    pub fn new(role: Role, config: SessionConfig) -> Self {
        Session {
            role,
            config,
            state: State::Start,
            remote: None,
            remote_has: VersionVector::new(),
            remote_acked: VersionVector::new(),
            sent: VersionVector::new(),
            capabilities: Vec::new(),
            got_eose: false,
            sent_eose: false,
            no_exchange: false,
            merkle: None,
            snapshot_out: None,
            outbox: std::collections::VecDeque::new(),
            cursor: 0,
            unread: false,
            in_flight: 0,
            eose_due: false,
            strategy: Strategy::Streaming,
            measured: false,
            full_resync_required: false,
            remote_floor: VersionVector::new(),
            snapshot_in: None,
            grant: None,
        }
    }

    /// The client's sync point did not verify on the server (see [`SyncPoint`]).
    pub fn full_resync_required(&self) -> bool {
        self.full_resync_required
    }

    /// What the remote has acknowledged holding.
    pub fn remote_acked(&self) -> &VersionVector {
        &self.remote_acked
    }

    /// What the remote holds, as far as this session knows.
    pub fn remote_has(&self) -> &VersionVector {
        &self.remote_has
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// A measure of the link from the driver: may change the strategy (reported) and send
    /// more if the window grew.
    pub fn set_quality(&mut self, q: NetworkQuality) -> Vec<Output> {
        let mut out = Vec::new();
        let new = choose_strategy(&q);
        if new != self.strategy || !self.measured {
            self.measured = true;
            if new != self.strategy {
                self.strategy = new;
                out.push(Output::Event(Lifecycle::Strategy {
                    peer: self.remote_name(),
                    strategy: new.as_str(),
                    rtt_ms: q.rtt_ms,
                    throughput_bps: q.throughput_bps,
                }));
            }
            self.pump(&mut out);
        }
        out
    }

    /// Asks the other side to answer with `Pong(nonce)`.
    pub fn ping(&mut self, nonce: u64) -> Vec<Output> {
        if self.state != State::Established {
            return Vec::new();
        }
        vec![Output::Send(Message::Ping(nonce))]
    }

    /// Events queued, not sent yet.
    pub fn pending(&self) -> usize {
        self.outbox.len()
    }

    pub fn client(config: SessionConfig) -> Self {
        Session::new(Role::Client, config)
    }

    pub fn server(config: SessionConfig) -> Self {
        Session::new(Role::Server, config)
    }

    pub fn is_client(&self) -> bool {
        self.role == Role::Client
    }

    /// The remote's peer id, once the handshake has named it.
    pub fn remote(&self) -> Option<&str> {
        self.remote.as_deref()
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The capabilities both sides have (after the handshake).
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    pub fn compression(&self) -> bool {
        self.capabilities.iter().any(|c| c == CAP_ZSTD)
    }

    /// One-shot sync is complete: the remote's stored events are all here and it has
    /// acknowledged everything we sent.
    pub fn is_synced(&self) -> bool {
        self.is_established()
            && self.got_eose
            && self.sent_eose
            && self.outbox.is_empty()
            && !self.unread
            && self.snapshot_out.is_none()
            && self.remote_acked.dominates(&self.sent)
    }

    /// Client: the opening message.
    pub fn start<E: EventStore, G: GraphStore>(&mut self, replica: &Replica<E, G>) -> Vec<Output> {
        assert_eq!(self.role, Role::Client, "only a client starts a session");
        assert_eq!(self.state, State::Start, "a session starts once");
        self.state = State::AwaitWelcome;
        vec![Output::Send(Message::Hello(Hello {
            peer: replica.peer().to_string(),
            protocol_version: PROTOCOL_VERSION.to_string(),
            schema_version: self.config.schema_version,
            capabilities: self.config.capabilities.clone(),
            auth_token: self.config.auth_token.clone(),
            version_vector: replica.version_vector().clone(),
            sync_point: self.config.sync_point.clone(),
            compacted: replica.floor().clone(),
        }))]
    }

    /// Handles one received message.
    pub fn receive<E: EventStore, G: GraphStore>(
        &mut self,
        msg: Message,
        replica: &mut Replica<E, G>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if self.state == State::Closed {
            return out;
        }
        if let Err(reason) = crate::limits::check_message(&msg) {
            self.fail(reason, &mut out);
            return out;
        }
        let result = match (self.role, self.state, msg) {
            (_, _, Message::Error(reason)) => {
                out.push(Output::Event(Lifecycle::Error {
                    reason: format!("the remote reported an error: {}", cut(&reason)),
                }));
                self.close(&mut out);
                Ok(())
            }
            (Role::Server, State::Start, Message::Hello(h)) => self.on_hello(h, replica, &mut out),
            (Role::Client, State::AwaitWelcome, Message::Welcome(w)) => {
                self.on_welcome(w, replica, &mut out)
            }
            (Role::Client, State::AwaitWelcome, Message::Refused(r)) => {
                if let Refused::Outdated { required, .. } = &r {
                    out.push(Output::Event(Lifecycle::Outdated {
                        peer: String::new(),
                        required: *required,
                    }));
                }
                out.push(Output::Event(Lifecycle::Refused {
                    reason: r.to_string(),
                }));
                self.close(&mut out);
                Ok(())
            }
            (_, State::Established, Message::Events(_)) if self.no_exchange => {
                Err("events on a session opened with the no-exchange capability".to_string())
            }
            (_, State::Established, Message::Events(events)) => {
                self.on_events(events, replica, &mut out)
            }
            // A snapshot replaces a replica's state wholesale: a server never takes one from
            // a client, whatever the client claims.
            (Role::Server, _, Message::SnapshotPart(_)) => {
                Err("a client sent a snapshot; a server never installs one".to_string())
            }
            (Role::Client, State::Established, Message::SnapshotPart(part)) => {
                self.on_snapshot_part(part, replica, &mut out)
            }
            (_, State::Established, Message::Eose) => {
                if self.got_eose {
                    Err("a second eose".to_string())
                } else {
                    self.got_eose = true;
                    out.push(Output::Event(Lifecycle::Eose {
                        peer: self.remote_name(),
                    }));
                    Ok(())
                }
            }
            (
                Role::Server,
                State::Established,
                m @ (Message::MerkleSummary { .. }
                | Message::MerkleDescendants { .. }
                | Message::MerkleFingerprints(_)
                | Message::MerkleEntries(_)
                | Message::MerkleRows(_)),
            ) => self.on_merkle(m, replica, &mut out),
            (_, State::Established, Message::Ack(vv)) => {
                let recorded = if self.records_remote() {
                    replica.note_remote(&self.remote_name(), &vv)
                } else {
                    Ok(false)
                };
                if let Err(e) = recorded {
                    self.fail(format!("recording an acknowledgement: {e}"), &mut out);
                    return out;
                }
                self.remote_acked.merge(&vv);
                self.remote_has.merge(&vv);
                self.in_flight = self.in_flight.saturating_sub(1);
                self.read_ahead(replica).map(|()| self.pump(&mut out))
            }
            (_, State::Established, Message::Ping(n)) => {
                out.push(Output::Send(Message::Pong(n)));
                Ok(())
            }
            (_, State::Established, Message::Pong(n)) => {
                out.push(Output::Pong(n));
                Ok(())
            }
            (_, State::Established, Message::Tx(msg)) => self.on_tx(msg, &mut out),
            (_, state, msg) => Err(format!(
                "unexpected {} message {}",
                msg.kind(),
                match state {
                    State::Start | State::AwaitWelcome => "before the handshake",
                    _ => "here",
                }
            )),
        };
        if let Err(reason) = result {
            self.fail(reason, &mut out);
        }
        out
    }

    /// The replica has new events (written here or imported from another session): send
    /// what the remote lacks. Before our EOSE nothing streams.
    pub fn local_changed<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &Replica<E, G>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if self.state != State::Established || !self.sent_eose || self.no_exchange {
            return out;
        }
        if self.remote_has.dominates(replica.version_vector()) {
            return out;
        }
        match self.queue_missing(replica, &mut out) {
            Ok(()) => self.pump(&mut out),
            Err(reason) => self.fail(reason, &mut out),
        }
        out
    }

    /// A transport-level failure (bad frame, oversized frame): report it to the remote
    /// and close.
    pub fn protocol_error(&mut self, reason: String) -> Vec<Output> {
        let mut out = Vec::new();
        self.fail(reason, &mut out);
        out
    }

    /// Whether what the remote holds is recorded (`Replica::note_remote`), so that
    /// compaction waits for it. A server with credentials records only a peer whose
    /// credential names its id: a wildcard (`"*"`) token proves no identity, and its
    /// sessions could otherwise pin the compaction floor under any id they claim. Without
    /// credentials (a shared token, or none) every remote is recorded, up to
    /// `MAX_KNOWN_PEERS`.
    fn records_remote(&self) -> bool {
        self.grant.as_ref().is_none_or(|g| g.bound)
    }

    /// A transaction message: a prepare must come from the transaction's coordinator
    /// itself, and a read-only credential takes no part.
    fn on_tx(&mut self, msg: crate::tx::WireMsg, out: &mut Vec<Output>) -> Result<(), String> {
        use crate::tx::TxMsg;
        if self
            .grant
            .as_ref()
            .is_some_and(|g| g.role == crate::auth::Role::ReadOnly)
        {
            return Err("a read-only credential takes no part in transactions".into());
        }
        let from = self.remote_name();
        // A prepare comes from its coordinator only: otherwise any peer could have this
        // replica vote yes and hold locks. Decisions and questions may come from any
        // peer: the participant takes a decision only from the coordinator or from a
        // participant its PREPARED record names (an answer to its question), and a
        // question changes nothing on the one asked (ARCHITECTURE.md, "Cooperative
        // termination between processes").
        let to_participant = matches!(msg, TxMsg::Prepare { .. });
        if to_participant && msg.tx().coordinator != from {
            return Err(format!(
                "a prepare of transaction {} from {from}, which is not its coordinator",
                msg.tx()
            ));
        }
        out.push(Output::Tx { from, msg });
        Ok(())
    }

    fn remote_name(&self) -> String {
        self.remote.clone().unwrap_or_default()
    }

    fn close(&mut self, out: &mut Vec<Output>) {
        self.state = State::Closed;
        out.push(Output::Close);
    }

    fn fail(&mut self, reason: String, out: &mut Vec<Output>) {
        if self.state == State::Closed {
            return;
        }
        out.push(Output::Event(Lifecycle::Error {
            reason: reason.clone(),
        }));
        out.push(Output::Send(Message::Error(reason)));
        self.close(out);
    }

    fn refuse(&mut self, r: Refused, out: &mut Vec<Output>) -> Result<(), String> {
        out.push(Output::Event(Lifecycle::Refused {
            reason: r.to_string(),
        }));
        out.push(Output::Send(Message::Refused(r)));
        self.close(out);
        Ok(())
    }

    fn on_hello<E: EventStore, G: GraphStore>(
        &mut self,
        h: Hello,
        replica: &mut Replica<E, G>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if major(&h.protocol_version) != major(PROTOCOL_VERSION) {
            return self.refuse(
                Refused::ProtocolVersion {
                    supported: PROTOCOL_VERSION.to_string(),
                    got: h.protocol_version,
                },
                out,
            );
        }
        if let Some(creds) = &self.config.credentials {
            match creds.grant(h.auth_token.as_deref(), &h.peer) {
                Ok(grant) => self.grant = Some(grant),
                Err(reason) => return self.refuse(Refused::Auth { reason }, out),
            }
        } else if let Some(required) = &self.config.auth_token {
            let ok = h
                .auth_token
                .as_deref()
                .is_some_and(|t| crate::auth::constant_time_eq(t.as_bytes(), required.as_bytes()));
            if !ok {
                let reason = if h.auth_token.is_none() {
                    "this hub requires an auth token and none was given"
                } else {
                    "the auth token is not valid for this hub"
                };
                return self.refuse(
                    Refused::Auth {
                        reason: reason.to_string(),
                    },
                    out,
                );
            }
        }
        if let Err(e) = PeerId::new(&h.peer) {
            return self.refuse(
                Refused::Peer {
                    reason: e.to_string(),
                },
                out,
            );
        }
        if h.peer == replica.peer().as_str() {
            return self.refuse(
                Refused::Peer {
                    reason: format!("{:?} is the hub's own peer id", h.peer),
                },
                out,
            );
        }
        if h.schema_version < self.config.schema_version {
            return self.refuse(
                Refused::Outdated {
                    required: self.config.schema_version,
                    got: h.schema_version,
                },
                out,
            );
        }
        if h.schema_version > self.config.schema_version {
            out.push(Output::Event(Lifecycle::Outdated {
                peer: h.peer.clone(),
                required: h.schema_version,
            }));
        }
        self.capabilities = self
            .config
            .capabilities
            .iter()
            .filter(|c| h.capabilities.contains(c))
            .cloned()
            .collect();
        // A hub that only carries transaction messages (a coordinator's) declares
        // no-exchange itself: its Welcome says so, and no events flow either way.
        let declared = self
            .config
            .capabilities
            .iter()
            .any(|c| c == CAP_NO_EXCHANGE);
        if declared && !self.capabilities.iter().any(|c| c == CAP_NO_EXCHANGE) {
            self.capabilities.push(CAP_NO_EXCHANGE.to_string());
        }
        let behind = !h.version_vector.dominates(replica.floor());
        if behind && !h.capabilities.iter().any(|c| c == CAP_SNAPSHOT) {
            return self.refuse(
                Refused::ProtocolVersion {
                    supported: format!(
                        "{PROTOCOL_VERSION} with the {CAP_SNAPSHOT:?} capability (this hub's \
                         log is compacted past what the client holds)"
                    ),
                    got: h.protocol_version,
                },
                out,
            );
        }
        let mode = if behind {
            SyncMode::Snapshot
        } else if h.version_vector.is_empty() && !replica.version_vector().is_empty() {
            SyncMode::Full
        } else {
            SyncMode::Incremental
        };
        self.full_resync_required = match &h.sync_point {
            // A client with history behind the floor gets a snapshot: check with Merkle.
            None => behind && !h.version_vector.is_empty(),
            Some(sp) => {
                behind
                    || !replica
                        .verify_sync_point(sp)
                        .map_err(|e| format!("checking the sync point: {e}"))?
            }
        };
        self.remote = Some(h.peer.clone());
        self.remote_has = h.version_vector.clone();
        self.remote_floor = h.compacted.clone();
        if self.records_remote() {
            replica
                .note_remote(&h.peer, &h.version_vector)
                .map_err(|e| format!("recording what {} holds: {e}", h.peer))?;
        }
        self.state = State::Established;
        out.push(Output::Send(Message::Welcome(Welcome {
            peer: replica.peer().to_string(),
            protocol_version: PROTOCOL_VERSION.to_string(),
            status: "established".to_string(),
            sync_mode: mode,
            schema_version: self.config.schema_version,
            capabilities: self.capabilities.clone(),
            version_vector: replica.version_vector().clone(),
            full_resync_required: self.full_resync_required,
            compacted: replica.floor().clone(),
        })));
        self.established(mode, out);
        if declared || h.capabilities.iter().any(|c| c == CAP_NO_EXCHANGE) {
            self.no_exchange = true;
            return Ok(());
        }
        self.send_stored(replica, out)
    }

    /// Answers a Merkle question from this replica's current state.
    fn on_merkle<E: EventStore, G: GraphStore>(
        &mut self,
        m: Message,
        replica: &mut Replica<E, G>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if let Message::MerkleSummary { len } = &m {
            if self.merkle.is_some() {
                return Err("one merkle_summary per session".into());
            }
            // The answerer picks the bits (the asker builds its index with the ones in the
            // reply). The asker's count counts only up to a few times this side's own: a
            // claim cannot make this side build a tree far larger than its state. Rows and
            // indexes are the replica's, shared by every session asking about this state.
            let claimed = usize::try_from(*len).unwrap_or(usize::MAX);
            let (rows, index) = replica.merkle(|own| {
                merkle::suggested_bucket_bits(own.max(claimed.min(own.saturating_mul(4) + 4096)))
            });
            out.push(Output::Send(Message::MerkleSummaryReply {
                bucket_bits: index.bucket_bits(),
                len: index.len() as u64,
                root: index.root().to_vec(),
            }));
            self.merkle = Some((rows, index));
            return Ok(());
        }
        let Some((rows, index)) = &self.merkle else {
            return Err(format!("{} before merkle_summary", m.kind()));
        };
        let bad = |what: &str| format!("{} names {what} that does not exist", m.kind());
        let reply = match &m {
            Message::MerkleDescendants {
                level,
                parents,
                depth,
            } => Message::MerkleHashes(pack(
                &index
                    .descendants(*level, parents, *depth)
                    .ok_or_else(|| bad("a level or node"))?,
            )),
            Message::MerkleFingerprints(buckets) if !strictly_ascending(buckets) => {
                return Err("merkle_fingerprints must name distinct buckets in order".into())
            }
            Message::MerkleFingerprints(buckets) => Message::MerkleFingerprintLists(
                buckets
                    .iter()
                    .map(|b| {
                        index
                            .fingerprints(*b)
                            .map(|f| serde_bytes::ByteBuf::from(pack(&f)))
                            .ok_or_else(|| bad("a bucket"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Message::MerkleEntries(picks) if !strictly_ascending(picks) => {
                return Err("merkle_entries must name distinct entries in order".into())
            }
            Message::MerkleEntries(picks) => {
                let entries: Vec<[u8; 32]> = picks
                    .iter()
                    .map(|&(b, p)| {
                        index
                            .bucket(b)
                            .and_then(|e| e.get(p as usize))
                            .map(|(k, d)| {
                                let mut both = [0u8; 32];
                                both[..16].copy_from_slice(k);
                                both[16..].copy_from_slice(d);
                                both
                            })
                            .ok_or_else(|| bad("an entry"))
                    })
                    .collect::<Result<_, _>>()?;
                Message::MerkleEntryList(pack(&entries))
            }
            Message::MerkleRows(keys) => {
                if keys.len() / 16 > rows.len() {
                    return Err(format!(
                        "merkle_rows asks for {} rows, more than the {} there are",
                        keys.len() / 16,
                        rows.len()
                    ));
                }
                let keys = unpack::<16>(keys).ok_or_else(|| bad("a key list"))?;
                let keys: std::collections::HashSet<[u8; 16]> = keys.into_iter().collect();
                Message::MerkleRowList(
                    rows.iter()
                        .filter(|r| keys.contains(&r.key))
                        .cloned()
                        .collect(),
                )
            }
            _ => unreachable!("only merkle questions reach here"),
        };
        out.push(Output::Send(reply));
        Ok(())
    }

    fn on_welcome<E: EventStore, G: GraphStore>(
        &mut self,
        w: Welcome,
        replica: &mut Replica<E, G>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if major(&w.protocol_version) != major(PROTOCOL_VERSION) {
            return Err(format!(
                "the server speaks protocol {:?}, this client {PROTOCOL_VERSION}",
                w.protocol_version
            ));
        }
        PeerId::new(&w.peer).map_err(|e| e.to_string())?;
        self.remote = Some(w.peer.clone());
        self.remote_has = w.version_vector.clone();
        self.remote_floor = w.compacted.clone();
        replica
            .note_remote(&w.peer, &w.version_vector)
            .map_err(|e| format!("recording what {} holds: {e}", w.peer))?;
        self.capabilities = w.capabilities.clone();
        self.full_resync_required = w.full_resync_required;
        self.state = State::Established;
        if w.schema_version > self.config.schema_version {
            out.push(Output::Event(Lifecycle::Outdated {
                peer: w.peer.clone(),
                required: w.schema_version,
            }));
        }
        self.established(w.sync_mode, out);
        if self
            .config
            .capabilities
            .iter()
            .chain(&self.capabilities)
            .any(|c| c == CAP_NO_EXCHANGE)
        {
            self.no_exchange = true;
            return Ok(());
        }
        self.send_stored(replica, out)
    }

    fn established(&mut self, mode: SyncMode, out: &mut Vec<Output>) {
        out.push(Output::Event(Lifecycle::Connect {
            peer: self.remote_name(),
            status: "established",
            protocol_version: PROTOCOL_VERSION.to_string(),
            sync_mode: mode.as_str(),
            full_resync_required: self.full_resync_required,
        }));
    }

    fn send_stored<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &Replica<E, G>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let missing = replica.version_vector().count_missing(&self.remote_has);
        out.push(Output::Event(Lifecycle::Sync {
            peer: self.remote_name(),
            sending: missing as usize,
            remote_version_vector: self.remote_has.clone(),
        }));
        self.queue_missing(replica, out)?;
        self.eose_due = true;
        self.pump(out);
        Ok(())
    }

    /// Queues what the remote lacks (and is not queued yet). If it lacks events compacted
    /// away here, a snapshot goes first.
    fn queue_missing<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &Replica<E, G>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if !self.remote_has.dominates(replica.floor()) {
            if !self.capabilities.iter().any(|c| c == CAP_SNAPSHOT) {
                return Err(format!(
                    "{} lacks events compacted away here and does not take snapshots (an \
                     older kuzu-sync): upgrade it",
                    self.remote_name()
                ));
            }
            let snap = replica
                .shared_snapshot_for(&self.remote_floor)
                .map_err(|e| format!("reading the snapshot: {e}"))?;
            out.push(Output::Event(Lifecycle::Snapshot {
                peer: self.remote_name(),
                direction: "sent",
                events: snap.event_count,
                bytes: snap.state.len() as u64,
            }));
            self.remote_has.merge(&snap.version_vector);
            // Like a batch: acknowledged once installed, and a one-shot sync waits for it.
            self.sent.merge(&snap.version_vector);
            self.in_flight += 1;
            self.snapshot_out = Some((snap, 0));
            self.next_snapshot_part(out);
        }
        // New events are stored after the cursor: read on from there.
        self.unread = true;
        self.read_ahead(replica)
    }

    /// Queues the next part of the snapshot being sent, if any; after the last one, what
    /// waited for it (events, EOSE).
    fn next_snapshot_part(&mut self, out: &mut Vec<Output>) {
        let Some((snap, offset)) = &mut self.snapshot_out else {
            return;
        };
        let total = snap.state.len();
        let end = (*offset + SNAPSHOT_PART_BYTES).min(total);
        out.push(Output::Send(Message::SnapshotPart(SnapshotPart {
            version_vector: snap.version_vector.clone(),
            event_count: snap.event_count,
            checksum: snap.checksum,
            total_bytes: total as u64,
            bytes: snap.state[*offset..end].to_vec(),
        })));
        *offset = end;
        if end >= total {
            self.snapshot_out = None;
            self.pump(out);
        }
    }

    /// What the session can send without the replica: the next part of a snapshot it is
    /// sending (a part is up to 4 MiB, and a snapshot goes out one part at a time so that a
    /// session holds one part, not a copy of the state). Drivers call it whenever the link
    /// has room; it returns nothing when there is nothing to send.
    pub fn poll_send(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if self.state == State::Established {
            self.next_snapshot_part(&mut out);
        }
        out
    }

    /// Whether a snapshot is being sent (the driver should call [`Session::poll_send`]).
    pub fn is_sending_snapshot(&self) -> bool {
        self.snapshot_out.is_some()
    }

    /// Reads the log on from the cursor until the outbox holds two windows' worth of
    /// events (at least 1,024) or the log ends. Reading in pages keeps a session's memory
    /// to that read-ahead however far behind its remote is.
    fn read_ahead<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &Replica<E, G>,
    ) -> Result<(), String> {
        if self.unread && !self.remote_has.dominates(replica.floor()) {
            // Compacted away since this session began (only a peer that is not a known
            // peer can lose events that way): what follows in the log would not connect.
            return Err(format!(
                "this replica's log was compacted past what {} had been sent; reconnect to \
                 receive a snapshot",
                self.remote_name()
            ));
        }
        let (window, batch) = self.window_and_batch();
        let target = (2 * window * batch).max(1_024);
        while self.unread && self.outbox.len() < target {
            let (events, next, done) = replica
                .events_page(&self.remote_has, self.cursor, target - self.outbox.len())
                .map_err(|e| format!("reading the event log: {e}"))?;
            for e in events {
                // Counted as the remote's once queued, so it is never queued twice.
                self.remote_has.observe(&e.id);
                self.outbox.push_back(e);
            }
            self.cursor = next;
            self.unread = !done;
        }
        Ok(())
    }

    /// Batches in flight at once, and events per batch.
    fn window_and_batch(&self) -> (usize, usize) {
        if self.measured {
            (
                self.strategy.window(),
                self.strategy.batch(self.config.batch_size),
            )
        } else {
            (1, self.config.probe_batch.max(1))
        }
    }

    /// Sends batches while the window allows, then EOSE once the stored events are out.
    fn pump(&mut self, out: &mut Vec<Output>) {
        if self.snapshot_out.is_some() {
            // Events follow the snapshot they build on.
            return;
        }
        let (window, batch) = self.window_and_batch();
        while self.in_flight < window && !self.outbox.is_empty() {
            if self.strategy == Strategy::PriorityBased && self.measured {
                self.critical_first();
            }
            let n = batch.min(self.outbox.len());
            let chunk: Vec<Event> = self.outbox.drain(..n).collect();
            for e in &chunk {
                self.sent.observe(&e.id);
            }
            self.in_flight += 1;
            out.push(Output::Send(Message::Events(chunk)));
        }
        if self.eose_due && self.outbox.is_empty() && !self.unread {
            self.eose_due = false;
            self.sent_eose = true;
            out.push(Output::Send(Message::Eose));
        }
    }

    /// Moves the critical tables' events, with the causal past they need, to the front of
    /// the outbox; both parts keep their causal order.
    fn critical_first(&mut self) {
        let critical = &self.config.critical_tables;
        if critical.is_empty() {
            return;
        }
        let mut needed = VersionVector::new();
        for e in &self.outbox {
            if critical
                .iter()
                .any(|t| t.eq_ignore_ascii_case(e.op.table()))
            {
                needed.merge(&e.deps);
                needed.observe(&e.id);
            }
        }
        if needed.is_empty() {
            return;
        }
        let (first, rest): (Vec<Event>, Vec<Event>) =
            self.outbox.drain(..).partition(|e| needed.contains(&e.id));
        self.outbox.extend(first);
        self.outbox.extend(rest);
    }

    fn on_snapshot_part<E: EventStore, G: GraphStore>(
        &mut self,
        part: SnapshotPart,
        replica: &mut Replica<E, G>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let (head, mut buf) = match self.snapshot_in.take() {
            None => {
                // Taken only when the sender's log is compacted past what this replica
                // holds (as it said at the handshake): a snapshot replaces state wholesale.
                if replica.version_vector().dominates(&self.remote_floor) {
                    return Err(format!(
                        "a snapshot was sent, but this replica holds every event {} \
                         compacted ({:?})",
                        self.remote_name(),
                        self.remote_floor
                    ));
                }
                if part.total_bytes > MAX_SNAPSHOT_BYTES {
                    return Err(format!(
                        "a snapshot of {} bytes is over the limit of {MAX_SNAPSHOT_BYTES}",
                        part.total_bytes
                    ));
                }
                let bytes = Vec::with_capacity(part.total_bytes.min(64 << 20) as usize);
                (part.clone(), bytes)
            }
            Some((head, buf)) => {
                if head.version_vector != part.version_vector
                    || head.total_bytes != part.total_bytes
                {
                    return Err("a snapshot part of another snapshot".into());
                }
                (head, buf)
            }
        };
        buf.extend_from_slice(&part.bytes);
        if buf.len() as u64 > head.total_bytes {
            return Err(format!(
                "snapshot parts hold more than the announced {} bytes",
                head.total_bytes
            ));
        }
        if (buf.len() as u64) < head.total_bytes {
            self.snapshot_in = Some((head, buf));
            return Ok(());
        }
        let snap = crate::snapshot::Snapshot {
            version_vector: head.version_vector,
            event_count: head.event_count,
            checksum: head.checksum,
            state: buf,
        };
        // Events from another session may have brought everything it stands for meanwhile.
        if !replica.version_vector().dominates(&snap.version_vector) {
            replica
                .install_snapshot(&snap)
                .map_err(|e| format!("installing the snapshot from {}: {e}", self.remote_name()))?;
            out.push(Output::Event(Lifecycle::Snapshot {
                peer: self.remote_name(),
                direction: "installed",
                events: snap.event_count,
                bytes: head.total_bytes,
            }));
        }
        self.remote_has.merge(&snap.version_vector);
        out.push(Output::Send(Message::Ack(replica.received_vector())));
        Ok(())
    }

    fn on_events<E: EventStore, G: GraphStore>(
        &mut self,
        events: Vec<Event>,
        replica: &mut Replica<E, G>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let peer = self.remote_name();
        if let Some(grant) = &self.grant {
            grant.check_events(&events, |e| replica.engine().is_applied(&e.id))?;
        }
        let conflicts_before = replica.conflicts().len();
        let mut tables: Vec<String> = events
            .iter()
            .map(|e| e.op.table().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        tables.sort();
        tables.dedup();
        let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
        // Seals answer writes, not other seals: two hubs linked through a client would
        // otherwise seal each other's seals forever.
        let brings_writes = events
            .iter()
            .any(|e| !matches!(e.op, Op::Seal) && !replica.engine().is_applied(&e.id));
        let outcome = replica.import(events).map_err(|e| match e {
            ReplicaError::Engine(e) => format!("invalid event: {e}"),
            other => format!("import failed: {other}"),
        })?;
        for id in &ids {
            self.remote_has.observe(id);
        }
        if outcome.applied > 0 {
            out.push(Output::Event(Lifecycle::Change {
                peer: peer.clone(),
                tables,
                events: outcome.applied,
            }));
            for c in &replica.conflicts()[conflicts_before..] {
                out.push(Output::Event(Lifecycle::Conflict {
                    peer: peer.clone(),
                    conflict: c.clone(),
                }));
            }
            if self.config.seal
                && brings_writes
                && self.role == Role::Server
                && replica
                    .engine()
                    .schema()
                    .policies()
                    .iter()
                    .any(|(_, _, p)| *p == Policy::OnlineWins)
            {
                replica
                    .write(vec![Op::Seal])
                    .map_err(|e| format!("writing a seal: {e}"))?;
            }
        }
        out.push(Output::Send(Message::Ack(replica.received_vector())));
        Ok(())
    }
}

/// An error text from a peer, cut to [`crate::limits::MAX_ERROR_TEXT`] bytes for reports.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(crate::limits::MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn major(v: &str) -> &str {
    v.split('.').next().unwrap_or(v)
}

#[cfg(test)]
mod tests;
