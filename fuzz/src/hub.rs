//! The `hub_session` harness: a server [`Session`] over an in-memory hub that already holds
//! a schema and some events, fed a fuzzed sequence of messages.
//!
//! The input is structured: [`Input`] and everything below it derive `Arbitrary`; they are
//! this crate's own mirror types, mapped to `kuzu_sync_engine::sync::Message` by
//! [`Harness`]. Names, peers and counters are drawn from small sets, so fuzzed events are
//! often valid or nearly so; an event can also come from a shadow client replica (really
//! valid), possibly tweaked afterwards.
//!
//! Checked after every message the session receives (a failed check panics, naming the
//! message sequence; libFuzzer reports it as a crash):
//!
//! - **(b) rejection changes nothing**: if the session answered `Error` or `Refused`, the
//!   hub's version vector, engine state (`Engine::dump`), stored graph, schema, event count
//!   and compaction floor are those from just before the message, and the session is
//!   closed;
//! - **(d) a hub never forgets or takes a snapshot from a client**: the version vector
//!   after the message dominates the one before, and no `Lifecycle::Snapshot` with
//!   direction `installed` comes out of a server session;
//! - **(e) nothing enters before the handshake**: a message received while the session is
//!   not established changes none of the above;
//!
//! and (a) no panic, (c) no huge allocation (libFuzzer's `-malloc_limit_mb`/`-rss_limit_mb`,
//! see scripts/fuzz.sh).

use std::fmt::Write as _;

use arbitrary::Arbitrary;
use kuzu_sync_engine::antientropy;
use kuzu_sync_engine::ports::GraphDump;
use kuzu_sync_engine::schema::{
    Check, Column, Constraint, Multiplicity, NodeTableDef, Owner, Policy, RelTableDef, SchemaOp,
};
use kuzu_sync_engine::sync::{
    Hello, Lifecycle, Message, NetworkQuality, Output, Refused, Session, SessionConfig,
    SnapshotPart, SyncMode, SyncPoint, Welcome, CAP_NO_EXCHANGE, CAP_SNAPSHOT, CAP_ZSTD,
    PROTOCOL_VERSION,
};
use kuzu_sync_engine::tx::TxId;
use kuzu_sync_engine::{
    DataType, EdgeRef, Entity, Event, EventId, EventStore, Hlc, NodeRef, Op, PeerId, Schema, Value,
    VersionVector,
};

use crate::fixture::{self, reopen, CLIENT_CLOCK, HUB_CLOCK, R};

/// Peers an index picks from. `client` first: the default is the connection's own.
pub const PEERS: [&str; 6] = ["client", "hub", "alice", "bob", "mallory", "x"];
pub const TABLES: [&str; 7] = ["User", "Follows", "user", "Item", "Ghost", "", "a b"];
pub const COLUMNS: [&str; 9] = [
    "name", "status", "age", "score", "rank", "since", "ghost", "", "NAME",
];
pub const NAMES: [&str; 6] = ["Alice", "Bob", "Carol", "Dave", "Zed", ""];
pub const TOKEN: &str = "s3cret";

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[i as usize % list.len()]
}

// ------------------------------------------------------------------------- input types

/// One run: how the hub is set up, its opening message, then the rest.
#[derive(Arbitrary, Debug, Clone)]
pub struct Input {
    pub setup: Setup,
    /// 0..=223: open with `hello` (usually valid); 224..: skip it.
    pub skip_hello: u8,
    pub hello: FuzzHello,
    pub steps: Vec<Step>,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Setup {
    /// Start from the hub whose first events are compacted into a snapshot.
    pub compacted: bool,
    /// The hub requires [`TOKEN`].
    pub token: bool,
    /// The hub seals imports (as `serve` does).
    pub seal: bool,
    /// The hub's schema version, `% 3`.
    pub schema_version: u8,
    /// Batch size, `% 8 + 1` (small, so several batches are in flight).
    pub batch: u8,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct FuzzHello {
    pub peer: PeerChoice,
    pub version: VersionChoice,
    /// `% 4`.
    pub schema_version: u8,
    pub caps: CapsChoice,
    pub token: TokenChoice,
    pub vv: VvChoice,
    pub sync_point: SyncPointChoice,
    pub compacted: CompactedChoice,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum PeerChoice {
    Client,
    Listed(u8),
    Other(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum VersionChoice {
    Current,
    Minor,
    Next,
    Other(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum CapsChoice {
    Default,
    None,
    NoExchange,
    Custom(Vec<CapChoice>),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum CapChoice {
    Zstd,
    Snapshot,
    NoExchange,
    Other(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum TokenChoice {
    Right,
    Missing,
    Wrong(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum VvChoice {
    /// The shadow client's real vector.
    Client,
    Empty,
    Custom(FuzzVv),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum SyncPointChoice {
    None,
    /// The sync point of everything the client holds, computed by the client.
    Real,
    Custom {
        event_count: u8,
        vv: FuzzVv,
        checksum: String,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum CompactedChoice {
    Empty,
    Custom(FuzzVv),
}

/// A version vector over [`PEERS`].
#[derive(Arbitrary, Debug, Clone)]
pub struct FuzzVv(pub Vec<(u8, Count)>);

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Count {
    Small(u8),
    Any(u64),
    /// `2^(n % 64)`, minus one if `n >= 64`: sizes near limits.
    Pow2(u8),
}

impl Count {
    fn get(self) -> u64 {
        match self {
            Count::Small(n) => n as u64,
            Count::Any(n) => n,
            Count::Pow2(n) => (1u64 << (n % 64)) - u64::from(n >= 64),
        }
    }
}

/// One thing that happens to the hub's session. Most are received messages.
#[derive(Arbitrary, Debug, Clone)]
pub enum Step {
    /// `Events` built from fuzzed events.
    Events(Vec<FuzzEvent>),
    /// The shadow client writes these ops (each valid for it or skipped) and sends
    /// everything it has that the hub lacks: usually a valid batch.
    ClientWrites(Vec<FuzzOp>),
    Eose,
    Ack(FuzzVv),
    /// `Ack` of exactly what the hub holds.
    AckHub,
    Hello(FuzzHello),
    Welcome,
    Refused,
    SnapshotPart {
        vv: FuzzVv,
        event_count: u8,
        total_bytes: Count,
        bytes: Vec<u8>,
    },
    /// A well-formed snapshot (see `Fixture::forged`), in `parts % 4 + 1` parts.
    ForgedSnapshot {
        which: u8,
        parts: u8,
    },
    Error(String),
    MerkleSummary {
        len: Count,
    },
    MerkleSummaryReply {
        bucket_bits: u32,
        len: u64,
        root: Vec<u8>,
    },
    MerkleDescendants {
        level: Small,
        depth: Small,
        parents: Numbers,
    },
    MerkleHashes(Vec<u8>),
    MerkleFingerprints(Numbers),
    MerkleFingerprintLists(Vec<Vec<u8>>),
    MerkleEntries(Pairs),
    MerkleEntryList(Vec<u8>),
    MerkleRows(Rows),
    MerkleRowList,
    Ping(u64),
    Pong(u64),
    /// Not a message: the hub writes these ops itself (as if from another connection),
    /// then the session is told the replica changed.
    HubWrites(Vec<FuzzOp>),
    /// Not a message: a network measure for the session.
    SetQuality {
        rtt_ms: u16,
        throughput_kbps: u32,
    },
    /// Not a message: a transport error on the connection.
    ProtocolError,
    /// Not a message: the connection closes and a new one starts (same hub, same client).
    Reconnect,
    /// A two-phase commit message (`kind % 5`: prepare, vote, decide, ack, ask).
    Tx {
        kind: u8,
        coordinator: String,
        epoch: u64,
        seq: u64,
        participants: Vec<String>,
        ops: Vec<String>,
        deadline: u64,
        detail: String,
    },
}

/// A `u32` that is usually small (a tree level, a depth, a bucket, a position).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Small {
    /// `% 32`.
    Tiny(u8),
    Any(u32),
}

impl Small {
    pub fn get(self) -> u32 {
        match self {
            Small::Tiny(n) => (n % 32) as u32,
            Small::Any(n) => n,
        }
    }
}

/// A list of `u32`, with shorthands for long runs.
#[derive(Arbitrary, Debug, Clone)]
pub enum Numbers {
    List(Vec<Small>),
    Repeat { value: Small, count: u16 },
    Range { start: Small, count: u16 },
}

impl Numbers {
    fn get(&self) -> Vec<u32> {
        match self {
            Numbers::List(v) => v.iter().map(|n| n.get()).collect(),
            Numbers::Repeat { value, count } => vec![value.get(); *count as usize],
            Numbers::Range { start, count } => (0..*count as u32)
                .map(|i| start.get().wrapping_add(i))
                .collect(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Pairs {
    List(Vec<(Small, Small)>),
    Repeat {
        bucket: Small,
        position: Small,
        count: u16,
    },
    Range {
        bucket: Small,
        count: u16,
    },
}

impl Pairs {
    fn get(&self) -> Vec<(u32, u32)> {
        match self {
            Pairs::List(v) => v.iter().map(|(b, p)| (b.get(), p.get())).collect(),
            Pairs::Repeat {
                bucket,
                position,
                count,
            } => vec![(bucket.get(), position.get()); *count as usize],
            Pairs::Range { bucket, count } => {
                (0..*count as u32).map(|p| (bucket.get(), p)).collect()
            }
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Rows {
    /// Keys of the hub's own entities, by index.
    Real(Vec<u8>),
    /// The first real key, `count` times.
    Repeat {
        count: u16,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum FuzzEvent {
    /// The shadow client writes `op`; its event, tweaked.
    Client { op: FuzzOp, tweak: Tweak },
    /// Built from parts.
    Raw {
        peer: u8,
        counter: Count,
        deps: DepsChoice,
        hlc: HlcChoice,
        op: FuzzOp,
    },
    /// One of the hub's own stored events (a duplicate), tweaked (equivocation).
    Replay { index: u8, tweak: Tweak },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Tweak {
    None,
    Counter(i8),
    DropDeps,
    AddDep(u8, Count),
    Hlc(HlcChoice),
    Peer(u8),
    Op(FuzzOp),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum DepsChoice {
    /// What the hub holds, with the event's own peer at `counter - 1`.
    Hub,
    /// Only the event's own peer at `counter - 1`.
    Own,
    Custom(FuzzVv),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum HlcChoice {
    /// After everything the hub holds.
    Later,
    Zero,
    Small(u16, u8),
    Any(u64, u32),
}

impl HlcChoice {
    fn get(self) -> Hlc {
        match self {
            HlcChoice::Later => Hlc {
                wall_ms: 10_000,
                logical: 0,
            },
            HlcChoice::Zero => Hlc::default(),
            HlcChoice::Small(w, l) => Hlc {
                wall_ms: w as u64,
                logical: l as u32,
            },
            HlcChoice::Any(w, l) => Hlc {
                wall_ms: w,
                logical: l,
            },
        }
    }
}

/// An op over the small name sets. The first variants are well-formed for the hub's schema.
#[derive(Arbitrary, Debug, Clone)]
pub enum FuzzOp {
    AddUser {
        name: u8,
        status: Option<u8>,
        age: Option<i8>,
    },
    Follow {
        from: u8,
        to: u8,
        since: Option<i8>,
    },
    SetStatus {
        name: u8,
        status: FuzzValue,
    },
    Bump {
        name: u8,
        delta: FuzzValue,
    },
    SetRank {
        name: u8,
        rank: u8,
    },
    DeleteUser(u8),
    Unfollow {
        from: u8,
        to: u8,
    },
    Seal,
    AddNode {
        table: u8,
        props: Vec<(u8, FuzzValue)>,
    },
    DeleteNode {
        table: u8,
        key: FuzzValue,
    },
    AddEdge {
        edge: FuzzEdge,
        props: Vec<(u8, FuzzValue)>,
    },
    DeleteEdge(FuzzEdge),
    Update {
        entity: FuzzEntity,
        prop: u8,
        value: FuzzValue,
    },
    Increment {
        entity: FuzzEntity,
        prop: u8,
        delta: FuzzValue,
    },
    CreateNodeTable {
        name: u8,
        columns: Vec<(u8, FuzzType)>,
        pk: u8,
    },
    CreateRelTable {
        name: u8,
        from: u8,
        to: u8,
        columns: Vec<(u8, FuzzType)>,
        multiplicity: u8,
    },
    AddColumn {
        table: u8,
        column: u8,
        ty: FuzzType,
        default: Option<FuzzValue>,
    },
    SetPolicy {
        table: u8,
        column: u8,
        policy: u8,
    },
    SetConstraint {
        table: u8,
        column: u8,
        check: u8,
        bound: i8,
        owner: Option<u8>,
    },
    /// A commit marker: any coordinator name, participant list and op count.
    Tx {
        coordinator: String,
        epoch: u64,
        seq: u64,
        participants: Vec<String>,
        ops: u32,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub struct FuzzEdge {
    pub table: u8,
    pub from: (u8, FuzzValue),
    pub to: (u8, FuzzValue),
    pub key: u8,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum FuzzEntity {
    User(u8),
    Node(u8, FuzzValue),
    Edge(FuzzEdge),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum FuzzValue {
    Name(u8),
    Int(i8),
    Null,
    Bool(bool),
    Int64(i64),
    Int32(i32),
    UInt64(u64),
    Double(f64),
    Str(String),
    Blob(Vec<u8>),
    List(Vec<i8>),
    Decimal { mantissa: i64, scale: u8 },
    Date(i32),
    Uuid(u128),
    Struct(Vec<(u8, i8)>),
    Map(Vec<(i8, i8)>),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum FuzzType {
    String,
    Int64,
    Int32,
    Bool,
    Double,
    Blob,
    ListInt64,
    Decimal(u8, u8),
    Array(u8),
    Struct(Vec<u8>),
    MapInt,
    Uuid,
    Date,
}

// ---------------------------------------------------------------------------- mapping

fn peer_id(i: u8) -> PeerId {
    PeerId::new(pick(&PEERS, i)).expect("listed peers are valid")
}

fn vv(v: &FuzzVv) -> VersionVector {
    v.0.iter().map(|(p, c)| (peer_id(*p), c.get())).collect()
}

fn value(v: &FuzzValue) -> Value {
    match v {
        FuzzValue::Name(i) => Value::String(pick(&NAMES, *i).into()),
        FuzzValue::Int(n) => Value::Int64(*n as i64),
        FuzzValue::Null => Value::Null,
        FuzzValue::Bool(b) => Value::Bool(*b),
        FuzzValue::Int64(n) => Value::Int64(*n),
        FuzzValue::Int32(n) => Value::Int32(*n),
        FuzzValue::UInt64(n) => Value::UInt64(*n),
        FuzzValue::Double(f) => Value::Double(*f),
        FuzzValue::Str(s) => Value::String(s.clone()),
        FuzzValue::Blob(b) => Value::Blob(b.clone()),
        FuzzValue::List(l) => Value::List(l.iter().map(|n| Value::Int64(*n as i64)).collect()),
        FuzzValue::Decimal { mantissa, scale } => Value::Decimal {
            mantissa: *mantissa as i128,
            scale: *scale,
        },
        FuzzValue::Date(d) => Value::Date(*d),
        FuzzValue::Uuid(u) => Value::Uuid(*u),
        FuzzValue::Struct(f) => Value::Struct(
            f.iter()
                .map(|(n, v)| (pick(&COLUMNS, *n).to_string(), Value::Int64(*v as i64)))
                .collect(),
        ),
        FuzzValue::Map(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (Value::Int64(*k as i64), Value::Int64(*v as i64)))
                .collect(),
        ),
    }
}

fn data_type(t: &FuzzType) -> DataType {
    match t {
        FuzzType::String => DataType::String,
        FuzzType::Int64 => DataType::Int64,
        FuzzType::Int32 => DataType::Int32,
        FuzzType::Bool => DataType::Bool,
        FuzzType::Double => DataType::Double,
        FuzzType::Blob => DataType::Blob,
        FuzzType::ListInt64 => DataType::List(Box::new(DataType::Int64)),
        FuzzType::Decimal(p, s) => DataType::Decimal {
            precision: *p,
            scale: *s,
        },
        FuzzType::Array(n) => DataType::Array(Box::new(DataType::Int64), *n as u32),
        FuzzType::Struct(f) => DataType::Struct(
            f.iter()
                .map(|n| (pick(&COLUMNS, *n).to_string(), DataType::Int64))
                .collect(),
        ),
        FuzzType::MapInt => DataType::Map(Box::new(DataType::Int64), Box::new(DataType::Int64)),
        FuzzType::Uuid => DataType::Uuid,
        FuzzType::Date => DataType::Date,
    }
}

fn columns(c: &[(u8, FuzzType)]) -> Vec<Column> {
    c.iter()
        .map(|(n, t)| Column {
            name: pick(&COLUMNS, *n).into(),
            ty: data_type(t),
            default: None,
        })
        .collect()
}

fn props(p: &[(u8, FuzzValue)]) -> Vec<(String, Value)> {
    p.iter()
        .map(|(n, v)| (pick(&COLUMNS, *n).to_string(), value(v)))
        .collect()
}

fn node(table: u8, key: &FuzzValue) -> NodeRef {
    NodeRef {
        table: pick(&TABLES, table).into(),
        key: value(key),
    }
}

fn edge(e: &FuzzEdge) -> EdgeRef {
    EdgeRef {
        table: pick(&TABLES, e.table).into(),
        from: node(e.from.0, &e.from.1),
        to: node(e.to.0, &e.to.1),
        key: pick(&NAMES, e.key).into(),
    }
}

fn entity(e: &FuzzEntity) -> Entity {
    match e {
        FuzzEntity::User(n) => Entity::Node(fixture::user(pick(&NAMES, *n))),
        FuzzEntity::Node(t, k) => Entity::Node(node(*t, k)),
        FuzzEntity::Edge(e) => Entity::Edge(edge(e)),
    }
}

pub fn op(o: &FuzzOp) -> Op {
    match o {
        FuzzOp::AddUser { name, status, age } => {
            let mut props = vec![(
                "name".to_string(),
                Value::String(pick(&NAMES, *name).into()),
            )];
            if let Some(s) = status {
                props.push(("status".into(), Value::String(pick(&NAMES, *s).into())));
            }
            if let Some(a) = age {
                props.push(("age".into(), Value::Int64(*a as i64)));
            }
            Op::AddNode {
                table: "User".into(),
                props,
            }
        }
        FuzzOp::Follow { from, to, since } => Op::AddEdge {
            edge: fixture::follows(pick(&NAMES, *from), pick(&NAMES, *to)),
            props: since
                .iter()
                .map(|s| ("since".to_string(), Value::Int64(*s as i64)))
                .collect(),
        },
        FuzzOp::SetStatus { name, status } => Op::Update {
            entity: Entity::Node(fixture::user(pick(&NAMES, *name))),
            prop: "status".into(),
            value: value(status),
        },
        FuzzOp::Bump { name, delta } => Op::Increment {
            entity: Entity::Node(fixture::user(pick(&NAMES, *name))),
            prop: "score".into(),
            delta: value(delta),
        },
        FuzzOp::SetRank { name, rank } => Op::Update {
            entity: Entity::Node(fixture::user(pick(&NAMES, *name))),
            prop: "rank".into(),
            value: Value::String(pick(&NAMES, *rank).into()),
        },
        FuzzOp::DeleteUser(n) => Op::DeleteNode(fixture::user(pick(&NAMES, *n))),
        FuzzOp::Unfollow { from, to } => {
            Op::DeleteEdge(fixture::follows(pick(&NAMES, *from), pick(&NAMES, *to)))
        }
        FuzzOp::Seal => Op::Seal,
        FuzzOp::AddNode { table, props: p } => Op::AddNode {
            table: pick(&TABLES, *table).into(),
            props: props(p),
        },
        FuzzOp::DeleteNode { table, key } => Op::DeleteNode(node(*table, key)),
        FuzzOp::AddEdge { edge: e, props: p } => Op::AddEdge {
            edge: edge(e),
            props: props(p),
        },
        FuzzOp::DeleteEdge(e) => Op::DeleteEdge(edge(e)),
        FuzzOp::Update {
            entity: e,
            prop,
            value: v,
        } => Op::Update {
            entity: entity(e),
            prop: pick(&COLUMNS, *prop).into(),
            value: value(v),
        },
        FuzzOp::Increment {
            entity: e,
            prop,
            delta,
        } => Op::Increment {
            entity: entity(e),
            prop: pick(&COLUMNS, *prop).into(),
            delta: value(delta),
        },
        FuzzOp::CreateNodeTable {
            name,
            columns: c,
            pk,
        } => Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
            name: pick(&TABLES, *name).into(),
            columns: columns(c),
            primary_key: pick(&COLUMNS, *pk).into(),
        })),
        FuzzOp::CreateRelTable {
            name,
            from,
            to,
            columns: c,
            multiplicity,
        } => Op::Schema(SchemaOp::CreateRelTable(RelTableDef {
            name: pick(&TABLES, *name).into(),
            connections: vec![(pick(&TABLES, *from).into(), pick(&TABLES, *to).into())],
            columns: columns(c),
            multiplicity: match multiplicity % 4 {
                0 => Multiplicity::ManyMany,
                1 => Multiplicity::ManyOne,
                2 => Multiplicity::OneMany,
                _ => Multiplicity::OneOne,
            },
        })),
        FuzzOp::AddColumn {
            table,
            column,
            ty,
            default,
        } => Op::Schema(SchemaOp::AddColumn {
            table: pick(&TABLES, *table).into(),
            column: Column {
                name: pick(&COLUMNS, *column).into(),
                ty: data_type(ty),
                default: default.as_ref().map(value),
            },
        }),
        FuzzOp::SetPolicy {
            table,
            column,
            policy,
        } => Op::Schema(SchemaOp::SetPolicy {
            table: pick(&TABLES, *table).into(),
            column: pick(&COLUMNS, *column).into(),
            policy: match policy % 3 {
                0 => Policy::Lww,
                1 => Policy::Counter,
                _ => Policy::OnlineWins,
            },
        }),
        FuzzOp::SetConstraint {
            table,
            column,
            check,
            bound,
            owner,
        } => Op::Schema(SchemaOp::SetConstraint {
            table: pick(&TABLES, *table).into(),
            column: if check % 4 == 2 {
                String::new()
            } else {
                pick(&COLUMNS, *column).into()
            },
            constraint: (check % 4 != 3).then(|| Constraint {
                check: match check % 4 {
                    0 => Check::Min(*bound as i64),
                    1 => Check::Unique,
                    _ => Check::Single,
                },
                owner: match owner {
                    Some(c) => Owner::Column(pick(&COLUMNS, *c).into()),
                    None => Owner::Peer("hub".into()),
                },
            }),
        }),
        FuzzOp::Tx {
            coordinator,
            epoch,
            seq,
            participants,
            ops,
        } => Op::Tx {
            tx: TxId {
                coordinator: coordinator.clone(),
                epoch: *epoch,
                seq: *seq,
            },
            participants: participants.clone(),
            ops: *ops,
        },
    }
}

fn tweak(mut e: Event, t: &Tweak) -> Event {
    match t {
        Tweak::None => {}
        Tweak::Counter(d) => e.id.counter = e.id.counter.wrapping_add_signed(*d as i64),
        Tweak::DropDeps => e.deps = VersionVector::new(),
        Tweak::AddDep(p, c) => e.deps.set(peer_id(*p), c.get()),
        Tweak::Hlc(h) => e.hlc = h.get(),
        Tweak::Peer(p) => e.id.peer = peer_id(*p),
        Tweak::Op(o) => e.op = op(o),
    }
    e
}

// ----------------------------------------------------------------------------- harness

/// What the checks compare: everything a rejected message must leave as it was.
#[derive(Debug, PartialEq)]
struct Observed {
    vv: VersionVector,
    floor: VersionVector,
    events: u64,
    engine: GraphDump,
    stored: GraphDump,
    schema: Schema,
}

fn observe(r: &mut R) -> Observed {
    Observed {
        vv: r.version_vector().clone(),
        floor: r.floor().clone(),
        events: r.event_store().count().expect("memory store counts"),
        engine: r.engine().dump(),
        stored: r.dump().expect("memory graph dumps"),
        schema: r.engine().schema().clone(),
    }
}

/// A message, shortened for the report: its `Debug` form up to 300 bytes. The writer
/// stops the formatting there, so a large message costs no more than a small one (the
/// harness describes every message it sends and receives).
pub fn describe(m: &Message) -> String {
    const MAX: usize = 300;
    struct Bounded(String);
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let room = MAX - self.0.len();
            if s.len() <= room {
                self.0.push_str(s);
                return Ok(());
            }
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.0.push_str(&s[..end]);
            Err(std::fmt::Error)
        }
    }
    let mut out = Bounded(String::with_capacity(MAX + 8));
    if write!(out, "{m:?}").is_err() {
        out.0.push('…');
    }
    out.0
}

/// The hub, the shadow client, the session, and what happened so far.
pub struct Harness {
    pub hub: R,
    pub client: R,
    pub session: Session,
    config: SessionConfig,
    /// Every step, readable, for the report of a failed check.
    pub log: Vec<String>,
    /// Counts for the seed generator: messages received, of which answered with an error.
    pub stats: Stats,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub established: bool,
    pub imported: usize,
    pub merkle_answers: usize,
    pub errors: usize,
    pub refusals: usize,
    pub snapshots_sent: usize,
    /// (kind of message received, outcome): 0 answered normally, 1 error, 2 refused,
    /// 3 ignored (the session was closed).
    pub seen: Vec<(&'static str, u8)>,
}

impl Harness {
    pub fn new(setup: &Setup) -> Self {
        let f = fixture::fixture();
        let hub = reopen(
            if setup.compacted {
                &f.hub_compacted
            } else {
                &f.hub
            },
            HUB_CLOCK,
        );
        let client = reopen(&f.client, CLIENT_CLOCK);
        let config = SessionConfig {
            schema_version: (setup.schema_version % 3) as u64,
            auth_token: setup.token.then(|| TOKEN.to_string()),
            batch_size: (setup.batch % 8) as usize + 1,
            probe_batch: (setup.batch % 8) as usize + 1,
            seal: setup.seal,
            ..SessionConfig::default()
        };
        Harness {
            hub,
            client,
            session: Session::server(config.clone()),
            config,
            log: vec![format!("setup: {setup:?}")],
            stats: Stats::default(),
        }
    }

    pub fn run(input: &Input) -> Harness {
        let mut h = Harness::new(&input.setup);
        if input.skip_hello < 224 {
            let m = h.hello(&input.hello);
            h.receive(m);
        }
        for step in &input.steps {
            h.step(step);
        }
        h
    }

    pub fn hello(&self, f: &FuzzHello) -> Message {
        Message::Hello(Hello {
            peer: match &f.peer {
                PeerChoice::Client => fixture::CLIENT.into(),
                PeerChoice::Listed(i) => pick(&PEERS, *i).into(),
                PeerChoice::Other(s) => s.clone(),
            },
            protocol_version: match &f.version {
                VersionChoice::Current => PROTOCOL_VERSION.into(),
                VersionChoice::Minor => "1.9".into(),
                VersionChoice::Next => "2.0".into(),
                VersionChoice::Other(s) => s.clone(),
            },
            schema_version: (f.schema_version % 4) as u64,
            capabilities: match &f.caps {
                CapsChoice::Default => vec![CAP_ZSTD.into(), CAP_SNAPSHOT.into()],
                CapsChoice::None => vec![],
                CapsChoice::NoExchange => vec![CAP_NO_EXCHANGE.into()],
                CapsChoice::Custom(c) => c
                    .iter()
                    .map(|c| match c {
                        CapChoice::Zstd => CAP_ZSTD.to_string(),
                        CapChoice::Snapshot => CAP_SNAPSHOT.to_string(),
                        CapChoice::NoExchange => CAP_NO_EXCHANGE.to_string(),
                        CapChoice::Other(s) => s.clone(),
                    })
                    .collect(),
            },
            auth_token: match &f.token {
                TokenChoice::Right => Some(TOKEN.into()),
                TokenChoice::Missing => None,
                TokenChoice::Wrong(s) => Some(s.clone()),
            },
            version_vector: match &f.vv {
                VvChoice::Client => self.client.version_vector().clone(),
                VvChoice::Empty => VersionVector::new(),
                VvChoice::Custom(v) => vv(v),
            },
            sync_point: match &f.sync_point {
                SyncPointChoice::None => None,
                SyncPointChoice::Real => self
                    .client
                    .sync_point(self.client.version_vector())
                    .expect("memory store scans"),
                SyncPointChoice::Custom {
                    event_count,
                    vv: v,
                    checksum,
                } => Some(SyncPoint {
                    timestamp_ms: 0,
                    event_count: *event_count as u64,
                    version_vector: vv(v),
                    checksum: checksum.clone(),
                }),
            },
            compacted: match &f.compacted {
                CompactedChoice::Empty => VersionVector::new(),
                CompactedChoice::Custom(v) => vv(v),
            },
        })
    }

    /// The shadow client writes `o` alone; its event, if the client accepted the op.
    fn client_event(&mut self, o: &FuzzOp) -> Option<Event> {
        let ids = self.client.write(vec![op(o)]).ok()?;
        let id = ids.first()?;
        self.client.event_store().get(id).cloned()
    }

    fn event(&mut self, e: &FuzzEvent) -> Option<Event> {
        match e {
            FuzzEvent::Client { op: o, tweak: t } => self.client_event(o).map(|e| tweak(e, t)),
            FuzzEvent::Raw {
                peer,
                counter,
                deps,
                hlc,
                op: o,
            } => {
                let peer = peer_id(*peer);
                let counter = counter.get();
                let mut deps = match deps {
                    DepsChoice::Hub => self.hub.version_vector().clone(),
                    DepsChoice::Own => VersionVector::new(),
                    DepsChoice::Custom(v) => vv(v),
                };
                if !matches!(
                    e,
                    FuzzEvent::Raw {
                        deps: DepsChoice::Custom(_),
                        ..
                    }
                ) {
                    deps.set(peer.clone(), counter.saturating_sub(1));
                }
                Some(Event {
                    id: EventId { peer, counter },
                    deps,
                    hlc: hlc.get(),
                    op: op(o),
                })
            }
            FuzzEvent::Replay { index, tweak: t } => {
                let all = self
                    .hub
                    .events_since(&VersionVector::new())
                    .expect("memory store scans");
                if all.is_empty() {
                    return None;
                }
                let e = all[*index as usize % all.len()].clone();
                Some(tweak(e, t))
            }
        }
    }

    fn entity_keys(&self) -> Vec<[u8; 16]> {
        let engine = self.hub.engine();
        antientropy::entities(&engine.dump(), engine.schema(), true)
            .into_iter()
            .map(|r| r.key)
            .collect()
    }

    pub fn step(&mut self, s: &Step) {
        let m = match s {
            Step::Events(es) => {
                let events = es.iter().filter_map(|e| self.event(e)).collect();
                Message::Events(events)
            }
            Step::ClientWrites(ops) => {
                for o in ops {
                    let _ = self.client.write(vec![op(o)]);
                }
                let events = self
                    .client
                    .events_since(self.hub.version_vector())
                    .expect("memory store scans");
                Message::Events(events)
            }
            Step::Eose => Message::Eose,
            Step::Ack(v) => Message::Ack(vv(v)),
            Step::AckHub => Message::Ack(self.hub.version_vector().clone()),
            Step::Hello(f) => self.hello(f),
            Step::Welcome => Message::Welcome(Welcome {
                peer: fixture::CLIENT.into(),
                protocol_version: PROTOCOL_VERSION.into(),
                status: "established".into(),
                sync_mode: SyncMode::Incremental,
                schema_version: 0,
                capabilities: vec![],
                version_vector: self.client.version_vector().clone(),
                full_resync_required: false,
                compacted: VersionVector::new(),
            }),
            Step::Refused => Message::Refused(Refused::Peer {
                reason: "fuzz".into(),
            }),
            Step::SnapshotPart {
                vv: v,
                event_count,
                total_bytes,
                bytes,
            } => Message::SnapshotPart(SnapshotPart {
                version_vector: vv(v),
                event_count: *event_count as u64,
                checksum: [0; 16],
                total_bytes: total_bytes.get(),
                bytes: bytes.clone(),
            }),
            Step::ForgedSnapshot { which, parts } => {
                let forged = &fixture::fixture().forged;
                let snap = &forged[*which as usize % forged.len()];
                let n = (*parts % 4) as usize + 1;
                let size = snap.state.len().div_ceil(n).max(1);
                let total = snap.state.len();
                let chunks: Vec<&[u8]> = if total == 0 {
                    vec![&[]]
                } else {
                    snap.state.chunks(size).collect()
                };
                for chunk in chunks {
                    let m = Message::SnapshotPart(SnapshotPart {
                        version_vector: snap.version_vector.clone(),
                        event_count: snap.event_count,
                        checksum: snap.checksum,
                        total_bytes: total as u64,
                        bytes: chunk.to_vec(),
                    });
                    self.receive(m);
                }
                return;
            }
            Step::Error(e) => Message::Error(e.clone()),
            Step::MerkleSummary { len } => Message::MerkleSummary { len: len.get() },
            Step::MerkleSummaryReply {
                bucket_bits,
                len,
                root,
            } => Message::MerkleSummaryReply {
                bucket_bits: *bucket_bits,
                len: *len,
                root: root.clone(),
            },
            Step::MerkleDescendants {
                level,
                depth,
                parents,
            } => Message::MerkleDescendants {
                level: level.get(),
                parents: parents.get(),
                depth: depth.get(),
            },
            Step::MerkleHashes(b) => Message::MerkleHashes(b.clone()),
            Step::MerkleFingerprints(b) => Message::MerkleFingerprints(b.get()),
            Step::MerkleFingerprintLists(l) => Message::MerkleFingerprintLists(
                l.iter().cloned().map(serde_bytes::ByteBuf::from).collect(),
            ),
            Step::MerkleEntries(p) => Message::MerkleEntries(p.get()),
            Step::MerkleEntryList(b) => Message::MerkleEntryList(b.clone()),
            Step::MerkleRows(rows) => {
                let keys = match rows {
                    Rows::Raw(b) => b.clone(),
                    Rows::Real(ix) => {
                        let all = self.entity_keys();
                        if all.is_empty() {
                            Vec::new()
                        } else {
                            ix.iter()
                                .flat_map(|i| all[*i as usize % all.len()])
                                .collect()
                        }
                    }
                    Rows::Repeat { count } => {
                        let first = self.entity_keys().first().copied().unwrap_or([0; 16]);
                        first.repeat(*count as usize)
                    }
                };
                Message::MerkleRows(keys)
            }
            Step::MerkleRowList => Message::MerkleRowList(Vec::new()),
            Step::Ping(n) => Message::Ping(*n),
            Step::Pong(n) => Message::Pong(*n),
            Step::Tx {
                kind,
                coordinator,
                epoch,
                seq,
                participants,
                ops,
                deadline,
                detail,
            } => {
                use kuzu_sync_engine::tx::{Decision, Reason, TxMsg, Vote};
                let tx = TxId {
                    coordinator: coordinator.clone(),
                    epoch: *epoch,
                    seq: *seq,
                };
                Message::Tx(match kind % 5 {
                    0 => TxMsg::Prepare {
                        tx,
                        participants: participants.clone(),
                        ops: ops.clone(),
                        deadline: *deadline,
                        // Addresses of some of the named participants (and, when the
                        // list is empty, of one that is not named).
                        addresses: participants
                            .iter()
                            .take(2)
                            .cloned()
                            .chain(participants.is_empty().then(|| "stranger".to_string()))
                            .map(|p| (p, detail.clone()))
                            .collect(),
                    },
                    1 => TxMsg::Vote {
                        tx,
                        vote: if detail.is_empty() {
                            Vote::Yes
                        } else {
                            Vote::No {
                                reason: Reason::Constraint,
                                detail: detail.clone(),
                            }
                        },
                    },
                    2 => TxMsg::Decide {
                        tx,
                        decision: if *deadline % 2 == 0 {
                            Decision::Commit
                        } else {
                            Decision::Abort
                        },
                    },
                    3 => TxMsg::Ack { tx },
                    _ => TxMsg::Ask {
                        tx,
                        deadline: (*deadline % 3 != 0).then_some(*deadline),
                    },
                })
            }
            Step::HubWrites(ops) => {
                let ops: Vec<Op> = ops.iter().map(op).collect();
                self.log.push(format!("hub writes {ops:?}"));
                let _ = self.hub.write(ops);
                let out = self.session.local_changed(&self.hub);
                self.handle_outputs("local_changed", &out);
                return;
            }
            Step::SetQuality {
                rtt_ms,
                throughput_kbps,
            } => {
                let q = NetworkQuality {
                    rtt_ms: *rtt_ms as f64,
                    throughput_bps: *throughput_kbps as f64 * 1000.0,
                };
                self.log.push(format!("set_quality {q:?}"));
                let out = self.session.set_quality(q);
                self.handle_outputs("set_quality", &out);
                return;
            }
            Step::ProtocolError => {
                self.log.push("protocol_error".into());
                let out = self.session.protocol_error("fuzz: bad frame".into());
                self.handle_outputs("protocol_error", &out);
                return;
            }
            Step::Reconnect => {
                self.log.push("reconnect (new server session)".into());
                self.session = Session::server(self.config.clone());
                return;
            }
        };
        self.receive(m);
    }

    /// Feeds one message to the session and checks the properties.
    pub fn receive(&mut self, m: Message) {
        self.log.push(format!("-> {}", describe(&m)));
        let kind = m.kind();
        let closed = self.session.is_closed();
        let established = self.session.is_established();
        let before = observe(&mut self.hub);
        let out = self.session.receive(m, &mut self.hub);
        let after = observe(&mut self.hub);
        let rejected = out.iter().any(|o| {
            matches!(
                o,
                Output::Send(Message::Error(_)) | Output::Send(Message::Refused(_))
            )
        });
        let outcome = if closed {
            3
        } else if out
            .iter()
            .any(|o| matches!(o, Output::Send(Message::Refused(_))))
        {
            2
        } else {
            u8::from(rejected)
        };
        self.stats.seen.push((kind, outcome));
        self.handle_outputs("receive", &out);
        if rejected {
            if after != before {
                self.fail("(b) a rejected message changed the hub", &before, &after);
            }
            if !self.session.is_closed() {
                self.fail(
                    "(b) the session is still open after Error/Refused",
                    &before,
                    &after,
                );
            }
        }
        if !after.vv.dominates(&before.vv) {
            self.fail(
                "(d) the hub's version vector went backwards",
                &before,
                &after,
            );
        }
        if out.iter().any(|o| {
            matches!(
                o,
                Output::Event(Lifecycle::Snapshot {
                    direction: "installed",
                    ..
                })
            )
        }) {
            self.fail(
                "(d) a server session installed a snapshot sent by its client",
                &before,
                &after,
            );
        }
        if !established && after != before {
            self.fail(
                "(e) a message before the handshake changed the hub",
                &before,
                &after,
            );
        }
        if self.session.is_established() {
            self.stats.established = true;
        }
        // What the session sends unasked (the parts of a snapshot it is sending), as a
        // driver asks for it when its link has room. It changes nothing in the hub.
        for _ in 0..64 {
            let more = self.session.poll_send();
            if more.is_empty() {
                break;
            }
            self.handle_outputs("poll_send", &more);
        }
        let polled = observe(&mut self.hub);
        if polled != after {
            self.fail("poll_send changed the hub", &after, &polled);
        }
    }

    fn handle_outputs(&mut self, what: &str, out: &[Output]) {
        for o in out {
            match o {
                Output::Send(m) => {
                    self.log.push(format!("   <- {}", describe(m)));
                    match m {
                        Message::Error(_) => self.stats.errors += 1,
                        Message::Refused(_) => self.stats.refusals += 1,
                        Message::SnapshotPart(_) => self.stats.snapshots_sent += 1,
                        Message::MerkleSummaryReply { .. }
                        | Message::MerkleHashes(_)
                        | Message::MerkleFingerprintLists(_)
                        | Message::MerkleEntryList(_)
                        | Message::MerkleRowList(_) => self.stats.merkle_answers += 1,
                        // The client takes what the hub sends, so its later writes
                        // depend on the hub's events (seals included).
                        Message::Events(events) => {
                            let _ = self.client.import(events.clone());
                        }
                        _ => {}
                    }
                }
                Output::Event(Lifecycle::Change { events, .. }) => {
                    self.stats.imported += events;
                    self.log
                        .push(format!("   [{what}] change: {events} events applied"));
                }
                Output::Event(e) => self.log.push(format!("   [{what}] {e:?}")),
                Output::Close => self.log.push("   close".into()),
                Output::Pong(n) => self.log.push(format!("   pong {n}")),
                // The session checked it and hands it to the driver's endpoint.
                Output::Tx { from, msg } => {
                    self.log.push(format!("   tx from {from}: {msg:?}"));
                }
            }
        }
    }

    fn fail(&self, check: &str, before: &Observed, after: &Observed) -> ! {
        let mut diff = String::new();
        if before.vv != after.vv {
            let _ = writeln!(diff, "  version vector: {:?} -> {:?}", before.vv, after.vv);
        }
        if before.floor != after.floor {
            let _ = writeln!(diff, "  floor: {:?} -> {:?}", before.floor, after.floor);
        }
        if before.events != after.events {
            let _ = writeln!(
                diff,
                "  stored events: {} -> {}",
                before.events, after.events
            );
        }
        if before.engine != after.engine {
            let _ = writeln!(
                diff,
                "  engine dump: {:?}\n    -> {:?}",
                before.engine, after.engine
            );
        }
        if before.stored != after.stored {
            let _ = writeln!(diff, "  stored graph changed");
        }
        if before.schema != after.schema {
            let _ = writeln!(diff, "  schema changed");
        }
        panic!(
            "check failed: {check}\n{diff}message sequence:\n  {}",
            self.log.join("\n  ")
        );
    }
}
