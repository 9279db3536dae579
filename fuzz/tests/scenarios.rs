//! Hand-written `hub_session` inputs for attacks the fuzzer should catch (and fixes must
//! keep out): `cargo test --manifest-path fuzz/Cargo.toml`. Each runs the harness with its
//! checks; a failed check panics with the message sequence.

use kuzu_sync_fuzz::hub::*;

fn hello(compacted: CompactedChoice) -> FuzzHello {
    FuzzHello {
        peer: PeerChoice::Client,
        version: VersionChoice::Current,
        schema_version: 0,
        caps: CapsChoice::Default,
        token: TokenChoice::Right,
        vv: VvChoice::Client,
        sync_point: SyncPointChoice::None,
        compacted,
    }
}

fn setup() -> Setup {
    Setup {
        compacted: false,
        token: false,
        seal: true,
        schema_version: 0,
        batch: 3,
    }
}

fn run(hello: FuzzHello, steps: Vec<Step>) {
    Harness::run(&Input {
        setup: setup(),
        skip_hello: 0,
        hello,
        steps,
    });
}

/// A client claims a compaction floor the hub lacks, then pushes a well-formed snapshot
/// of another history: a hub must never install it.
#[test]
fn a_client_cannot_push_a_snapshot() {
    for which in 0..2 {
        run(
            hello(CompactedChoice::Custom(FuzzVv(vec![(4, Count::Small(1))]))),
            vec![Step::ForgedSnapshot { which, parts: 1 }],
        );
    }
}

/// A valid session: the client writes, the hub imports, acks, answers Merkle questions.
#[test]
fn a_valid_session_passes_the_checks() {
    run(
        hello(CompactedChoice::Empty),
        vec![
            Step::ClientWrites(vec![
                FuzzOp::AddUser {
                    name: 3,
                    status: Some(1),
                    age: Some(30),
                },
                FuzzOp::Follow {
                    from: 3,
                    to: 0,
                    since: None,
                },
                FuzzOp::SetRank { name: 0, rank: 2 },
            ]),
            Step::AckHub,
            Step::Eose,
            Step::MerkleSummary {
                len: Count::Small(3),
            },
            Step::MerkleDescendants {
                level: Small::Tiny(0),
                depth: Small::Tiny(0),
                parents: Numbers::List(vec![Small::Tiny(0)]),
            },
            Step::MerkleFingerprints(Numbers::List(vec![Small::Tiny(0)])),
            Step::MerkleEntries(Pairs::List(vec![(Small::Tiny(0), Small::Tiny(0))])),
            Step::MerkleRows(Rows::Real(vec![0, 1])),
            Step::Ping(7),
        ],
    );
}

/// Invalid events after a valid batch: rejected, and nothing of them stays.
#[test]
fn invalid_events_change_nothing() {
    run(
        hello(CompactedChoice::Empty),
        vec![Step::Events(vec![
            FuzzEvent::Client {
                op: FuzzOp::AddUser {
                    name: 4,
                    status: None,
                    age: None,
                },
                tweak: Tweak::None,
            },
            FuzzEvent::Client {
                op: FuzzOp::AddUser {
                    name: 2,
                    status: None,
                    age: None,
                },
                tweak: Tweak::Op(FuzzOp::AddNode {
                    table: 4,
                    props: vec![],
                }),
            },
        ])],
    );
}
