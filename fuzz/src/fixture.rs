//! In-memory replicas to start each `hub_session` run from. Built once per process; each
//! run reopens clones of the stores (a replay of about twenty events).

use std::sync::OnceLock;

use kuzu_sync_engine::memory::MemoryGraphStore;
use kuzu_sync_engine::schema::{Column, Multiplicity, NodeTableDef, Policy, RelTableDef, SchemaOp};
use kuzu_sync_engine::DataType;
use kuzu_sync_engine::{
    EdgeRef, Entity, FixedClock, MemoryEventStore, NodeRef, Op, PeerId, Replica, Snapshot, Value,
    VersionVector,
};

pub type R = Replica<MemoryEventStore, MemoryGraphStore>;

/// The hub's peer id.
pub const HUB: &str = "hub";
/// The peer id the fuzzed connection normally claims.
pub const CLIENT: &str = "client";
/// Wall clocks (ms) of the replicas. The client's is later than the hub's so its events
/// are stamped after everything it has seen, as a real client's would be.
pub const HUB_CLOCK: u64 = 1_000;
pub const CLIENT_CLOCK: u64 = 2_000;

/// Stores to reopen, and snapshots to push.
#[derive(Debug)]
pub struct Fixture {
    /// The hub, not compacted: User (name PK, status, age, score COUNTER, rank
    /// ONLINE_WINS), Follows (User -> User, since), three users, an edge, updates, written
    /// by `hub` and `alice`.
    pub hub: (MemoryEventStore, MemoryGraphStore),
    /// The same hub with its first events compacted into a snapshot (a client that lacks
    /// them gets `sync_mode: snapshot`).
    pub hub_compacted: (MemoryEventStore, MemoryGraphStore),
    /// `client`, holding the hub's whole history and nothing of its own.
    pub client: (MemoryEventStore, MemoryGraphStore),
    /// Snapshots a client could push: `mallory`'s own history with a different `User`
    /// table; the hub's history plus one `mallory` update; the hub's own state.
    pub forged: Vec<Snapshot>,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build)
}

pub fn replica(peer: &str, clock: u64) -> R {
    Replica::create(
        MemoryEventStore::default(),
        MemoryGraphStore::new(),
        PeerId::new(peer).expect("valid peer id"),
        Box::new(FixedClock(clock)),
    )
    .expect("a fresh in-memory replica")
}

/// Reopens cloned stores as a replica (replaying the log).
pub fn reopen(stores: &(MemoryEventStore, MemoryGraphStore), clock: u64) -> R {
    Replica::open(
        stores.0.clone(),
        stores.1.clone(),
        Box::new(FixedClock(clock)),
    )
    .expect("fixture stores reopen")
}

fn col(name: &str, ty: DataType) -> Column {
    Column {
        name: name.into(),
        ty,
        default: None,
    }
}

pub fn user_table() -> Op {
    Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
        name: "User".into(),
        columns: vec![
            col("name", DataType::String),
            col("status", DataType::String),
            col("age", DataType::Int64),
            col("score", DataType::Int64),
            col("rank", DataType::String),
        ],
        primary_key: "name".into(),
    }))
}

pub fn follows_table() -> Op {
    Op::Schema(SchemaOp::CreateRelTable(RelTableDef {
        name: "Follows".into(),
        connections: vec![("User".into(), "User".into())],
        columns: vec![col("since", DataType::Int64)],
        multiplicity: Multiplicity::ManyMany,
    }))
}

pub fn user(name: &str) -> NodeRef {
    NodeRef {
        table: "User".into(),
        key: Value::String(name.into()),
    }
}

pub fn add_user(name: &str, status: &str) -> Op {
    Op::AddNode {
        table: "User".into(),
        props: vec![
            ("name".into(), Value::String(name.into())),
            ("status".into(), Value::String(status.into())),
        ],
    }
}

pub fn follows(from: &str, to: &str) -> EdgeRef {
    EdgeRef {
        table: "Follows".into(),
        from: user(from),
        to: user(to),
        key: String::new(),
    }
}

fn set(name: &str, prop: &str, value: Value) -> Op {
    Op::Update {
        entity: Entity::Node(user(name)),
        prop: prop.into(),
        value,
    }
}

fn build() -> Fixture {
    let mut hub = replica(HUB, HUB_CLOCK);
    hub.write(vec![
        user_table(),
        follows_table(),
        Op::Schema(SchemaOp::SetPolicy {
            table: "User".into(),
            column: "score".into(),
            policy: Policy::Counter,
        }),
        Op::Schema(SchemaOp::SetPolicy {
            table: "User".into(),
            column: "rank".into(),
            policy: Policy::OnlineWins,
        }),
    ])
    .unwrap();
    hub.write(vec![add_user("Alice", "online"), add_user("Bob", "away")])
        .unwrap();

    let mut alice = replica("alice", 1_500);
    alice
        .import(hub.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    alice
        .write(vec![
            add_user("Carol", "online"),
            set("Alice", "status", Value::String("busy".into())),
            Op::Increment {
                entity: Entity::Node(user("Alice")),
                prop: "score".into(),
                delta: Value::Int64(5),
            },
        ])
        .unwrap();
    hub.import(alice.events_since(hub.version_vector()).unwrap())
        .unwrap();
    hub.write(vec![
        Op::AddEdge {
            edge: follows("Alice", "Bob"),
            props: vec![("since".into(), Value::Int64(2024))],
        },
        set("Bob", "rank", Value::String("gold".into())),
        Op::Seal,
    ])
    .unwrap();

    let mut client = replica(CLIENT, CLIENT_CLOCK);
    client
        .import(hub.events_since(&VersionVector::new()).unwrap())
        .unwrap();

    // Forged snapshots.
    let mut mallory = replica("mallory", 500);
    mallory
        .write(vec![
            Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
                name: "User".into(),
                columns: vec![col("name", DataType::String), col("evil", DataType::Int64)],
                primary_key: "name".into(),
            })),
            Op::AddNode {
                table: "User".into(),
                props: vec![
                    ("name".into(), Value::String("Alice".into())),
                    ("evil".into(), Value::Int64(666)),
                ],
            },
        ])
        .unwrap();
    let own = mallory.snapshot_for(&VersionVector::new()).unwrap();
    let mut mallory2 = replica("mallory", 3_000);
    mallory2
        .import(hub.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    mallory2
        .write(vec![set("Alice", "status", Value::String("pwned".into()))])
        .unwrap();
    let grafted = mallory2.snapshot_for(&VersionVector::new()).unwrap();
    let hubs_own = hub.snapshot_for(&VersionVector::new()).unwrap();

    let hub_parts = hub.into_parts();
    let mut compacted = reopen(&hub_parts, HUB_CLOCK);
    let floor: VersionVector = [
        (PeerId::new(HUB).unwrap(), 6),
        (PeerId::new("alice").unwrap(), 1),
    ]
    .into_iter()
    .collect();
    compacted.compact_to(&floor).unwrap();
    assert!(
        !compacted.floor().is_empty(),
        "the fixture hub is compacted"
    );

    Fixture {
        hub: hub_parts,
        hub_compacted: compacted.into_parts(),
        client: client.into_parts(),
        forged: vec![own, grafted, hubs_own],
    }
}
