//! Atomic visibility through real processes: a transaction commits on two `serve`
//! participants; a third replica that syncs with one of them shows none of it (its events
//! are held, and stay held across a restart of that replica's process), and shows all of
//! it once it has synced with the other.

use std::path::Path;

use serde_json::{json, Value as Json};

mod common;
use common::{json as parse, ks, ks_stdin, lines, ok, p, user_ids as users, Listening};

const SCHEMA: &str =
    r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(id STRING, name STRING, PRIMARY KEY (id))"}"#;

fn held(r: &Path) -> u64 {
    parse(&ok(ks(&["status", p(r)])))["transactions"]["held_events"]
        .as_u64()
        .unwrap()
}

fn sync(r: &Path, hub: &Listening) {
    ok(ks(&[
        "sync",
        p(r),
        "--remote",
        &format!("tcp://{}", hub.addr),
    ]));
}

#[test]
fn a_third_replica_shows_a_transaction_only_when_it_has_every_part() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // p1 writes the schema; p2 and the third replica r get it from p1's bundle.
    let dirs: Vec<_> = ["p1", "p2", "r"].iter().map(|n| dir.join(n)).collect();
    for (d, name) in dirs.iter().zip(["p1", "p2", "r"]) {
        ok(ks(&["init", p(d), "--peer-id", name]));
    }
    ok(ks_stdin(&["write", p(&dirs[0])], SCHEMA));
    let bundle = dir.join("schema.bundle");
    ok(ks(&["export", p(&dirs[0]), "--out", p(&bundle)]));
    for d in &dirs[1..] {
        ok(ks(&["import", p(d), p(&bundle)]));
    }

    let hubs: Vec<Listening> = dirs[..2]
        .iter()
        .map(|d| Listening::start(&["serve", p(d), "--listen", "127.0.0.1:0"]))
        .collect();
    let coord = Listening::start(&[
        "coordinator",
        p(&dir.join("coord")),
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut participants = serde_json::Map::new();
    for (i, hub) in hubs.iter().enumerate() {
        let ops: Vec<Json> = (0..2)
            .map(|k| json!({"op":"add_node","table":"User","props":{"id":format!("u{i}{k}")}}))
            .collect();
        participants.insert(
            format!("p{}", i + 1),
            json!({"url": format!("tcp://{}", hub.addr), "ops": ops}),
        );
    }
    let f = dir.join("tx.json");
    std::fs::write(&f, json!({"participants": participants}).to_string()).unwrap();
    let answer = lines(&ok(ks(&[
        "tx",
        "--coordinator",
        &format!("http://{}", coord.addr),
        p(&f),
    ])))
    .remove(0);
    assert_eq!(answer["decision"], "commit", "{answer}");

    // p1's part alone: held (its marker and two ops), nothing shown.
    sync(&dirs[2], &hubs[0]);
    assert_eq!(users(&dirs[2]), Vec::<String>::new());
    assert_eq!(held(&dirs[2]), 3);
    // Still held after the process that received it is gone (every command is one).
    assert_eq!(held(&dirs[2]), 3);
    // p2's part: everything at once.
    sync(&dirs[2], &hubs[1]);
    assert_eq!(users(&dirs[2]), ["u00", "u01", "u10", "u11"]);
    assert_eq!(held(&dirs[2]), 0);
    // p1 shows its own part from its commit on (it never received p2's).
    drop(hubs);
    assert_eq!(users(&dirs[0]), ["u00", "u01"]);
}
