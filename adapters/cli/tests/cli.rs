//! End-to-end tests of the `kuzu-sync` command on real files: every subcommand, bad input,
//! crash safety under SIGKILL, and fidelity against plain Kuzu `COPY` on the shared datasets.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value as Json;

mod common;
use common::{fails, json, ks, ks_stdin, lines, ok, p, BIN};

fn datasets() -> PathBuf {
    let p = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../../shared/datasets");
    assert!(
        p.is_dir(),
        "the shared datasets must be at {} (../shared beside the repository)",
        p.display()
    );
    p.canonicalize().unwrap()
}

const SCHEMA: &str =
    "CREATE NODE TABLE User(name STRING, age INT64, email STRING, PRIMARY KEY (name));
CREATE NODE TABLE Product(id INT64, stock INT64, PRIMARY KEY (id));
CREATE REL TABLE Follows(FROM User TO User, since INT64);
CREATE REL TABLE LivesIn(FROM User TO Product, MANY_ONE);";

/// A replica with the test schema.
fn replica(dir: &Path, name: &str, peer: &str) -> PathBuf {
    let r = dir.join(name);
    ok(ks(&["init", p(&r), "--peer-id", peer]));
    let schema = dir.join(format!("{name}-schema.cypher"));
    std::fs::write(&schema, SCHEMA).unwrap();
    ok(ks(&["schema", p(&r), p(&schema)]));
    ok(ks_stdin(
        &["write", p(&r)],
        r#"{"op":"set_policy","table":"Product","prop":"stock","policy":"counter"}"#,
    ));
    r
}

fn query(r: &Path, q: &str) -> Vec<Json> {
    lines(&ok(ks(&["query", p(r), q])))
}

fn status(r: &Path) -> Json {
    json(&ok(ks(&["status", p(r)])))
}

/// Everything a user could see of a replica, for "unchanged" checks.
fn snapshot(r: &Path) -> (Json, Vec<Json>, Vec<Json>) {
    let mut s = status(r);
    s.as_object_mut().unwrap().remove("conflicts");
    let sorted = |mut rows: Vec<Json>| {
        rows.sort_by_key(|r| r.to_string());
        rows
    };
    (
        s,
        sorted(query(r, "MATCH (n) RETURN label(n) AS l, n")),
        sorted(query(r, "MATCH (a)-[e]->(b) RETURN label(e) AS l, a, b, e")),
    )
}

fn export(r: &Path, since: Option<&Json>, out: &Path) -> Json {
    let mut args = vec!["export", p(r), "--out", p(out)];
    let s;
    if let Some(vv) = since {
        s = vv.to_string();
        args.extend(["--since", &s]);
    }
    json(&ok(ks(&args)))
}

#[test]
fn help_on_every_subcommand() {
    for sub in [
        "init",
        "schema",
        "load",
        "write",
        "query",
        "export",
        "import",
        "status",
        "conflicts",
        "adopt",
        "serve",
        "sync",
        "diff",
        "drift",
        "compact",
    ] {
        let out = ok(ks(&[sub, "--help"]));
        assert!(out.contains("Usage: kuzu-sync"), "{sub} --help: {out}");
    }
}

#[test]
fn every_op_kind_then_bundles_converge_and_reimport_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a", "node_a");
    ok(ks_stdin(
        &["write", p(&a)],
        r#"{"op":"add_node","table":"User","props":{"name":"Alice","age":30}}
{"op":"add_node","table":"User","props":{"name":"Bob","age":40,"email":"bob@x"}}
{"op":"add_node","table":"User","props":{"name":"Carol"}}
{"op":"add_node","table":"Product","props":{"id":1,"stock":100}}
{"op":"add_edge","table":"Follows","from":"Alice","to":"Bob","props":{"since":2020}}
{"op":"add_edge","table":"Follows","from":"Alice","to":"Bob","key":"second","props":{"since":2021}}
{"op":"add_edge","table":"Follows","from":"Bob","to":"Carol","props":{"since":2022}}
{"op":"update","table":"User","key":"Alice","prop":"email","value":"alice@a.com"}
{"op":"update","table":"Follows","from":"Bob","to":"Carol","prop":"since","value":1999}
{"op":"increment","table":"Product","key":1,"prop":"stock","delta":-1}
{"op":"delete_node","table":"User","key":"Carol"}
{"op":"delete_edge","table":"Follows","from":"Alice","to":"Bob","key":"second"}"#,
    ));
    let users = query(
        &a,
        "MATCH (u:User) RETURN u.name AS name, u.email AS email ORDER BY name",
    );
    assert_eq!(
        users,
        vec![
            json(r#"{"name":"Alice","email":"alice@a.com"}"#),
            json(r#"{"name":"Bob","email":"bob@x"}"#)
        ]
    );
    // Carol's delete took her edge with her; the keyed second edge is deleted.
    let follows = query(
        &a,
        "MATCH (x)-[f:Follows]->(y) RETURN x.name AS a, y.name AS b, f.since AS s",
    );
    assert_eq!(follows, vec![json(r#"{"a":"Alice","b":"Bob","s":2020}"#)]);
    assert_eq!(
        query(&a, "MATCH (p:Product) RETURN p.stock AS s"),
        vec![json(r#"{"s":99}"#)]
    );

    // B gets everything by bundle; the SPEC §2 counter example on top.
    let b = dir.path().join("b");
    ok(ks(&["init", p(&b), "--peer-id", "node_b"]));
    let bundle = dir.path().join("a.bundle");
    let e = export(&a, None, &bundle);
    assert!(e["events"].as_u64().unwrap() > 10);
    let imported = json(&ok(ks(&["import", p(&b), p(&bundle)])));
    assert_eq!(imported["applied"], e["events"]);
    let before = snapshot(&b);
    let again = json(&ok(ks(&["import", p(&b), p(&bundle)])));
    assert_eq!(again["applied"], 0);
    assert_eq!(again["duplicates"], e["events"]);
    assert_eq!(
        snapshot(&b),
        before,
        "importing the same bundle twice changes nothing"
    );

    // Concurrent writes: −5 on A, −3 on B; email set on both (B later).
    ok(ks_stdin(
        &["write", p(&a)],
        r#"{"op":"increment","table":"Product","key":1,"prop":"stock","delta":-5}
{"op":"update","table":"User","key":"Alice","prop":"email","value":"alice@a.com2"}"#,
    ));
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok(ks_stdin(
        &["write", p(&b)],
        r#"{"op":"increment","table":"Product","key":1,"prop":"stock","delta":-3}
{"op":"update","table":"User","key":"Alice","prop":"email","value":"alice@b.com"}"#,
    ));
    let vv_a = status(&a)["version_vector"].clone();
    let vv_b = status(&b)["version_vector"].clone();
    export(&a, Some(&vv_b), &dir.path().join("a2b"));
    export(&b, Some(&vv_a), &dir.path().join("b2a"));
    ok(ks(&["import", p(&b), p(&dir.path().join("a2b"))]));
    ok(ks(&["import", p(&a), p(&dir.path().join("b2a"))]));
    for r in [&a, &b] {
        assert_eq!(
            query(r, "MATCH (p:Product) RETURN p.stock AS s"),
            vec![json(r#"{"s":91}"#)],
            "99 - 5 - 3"
        );
        assert_eq!(
            query(r, "MATCH (u:User {name:'Alice'}) RETURN u.email AS e"),
            vec![json(r#"{"e":"alice@b.com"}"#)]
        );
    }
    assert_eq!(snapshot(&a).1, snapshot(&b).1);
    assert_eq!(snapshot(&a).2, snapshot(&b).2);
    assert_eq!(status(&a)["version_vector"], status(&b)["version_vector"]);

    let conflicts = lines(&ok(ks(&["conflicts", p(&a)])));
    let email = conflicts
        .iter()
        .find(|c| c["property"] == "email")
        .expect("email conflict recorded");
    assert_eq!(email["type"], "concurrent_update");
    assert_eq!(email["strategy"], "last_write_wins");
    assert_eq!(email["winner"]["value"], "alice@b.com");
    assert!(conflicts.iter().any(|c| c["strategy"] == "cumulative"));

    let s = status(&a);
    assert_eq!(s["peer_id"], "node_a");
    assert_eq!(s["events"]["stored"], s["events"]["applied"]);
    assert_eq!(s["apply_watermark"], s["version_vector"]);
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a", "node_a");
    ok(ks_stdin(
        &["write", p(&a)],
        r#"{"op":"add_node","table":"User","props":{"name":"Alice","age":30}}"#,
    ));
    let before = snapshot(&a);
    let cases: [(&str, &str); 7] = [
        ("{\"op\":\"add_node\",\"table\":\"User\",", "malformed JSON"),
        (
            r#"{"op":"add_node","table":"Nope","props":{"name":"x"}}"#,
            "Nope",
        ),
        (
            r#"{"op":"add_node","table":"User","props":{"name":"x","shoe":1}}"#,
            "shoe",
        ),
        (
            r#"{"op":"add_node","table":"User","props":{"name":"x","age":"old"}}"#,
            "age",
        ),
        (
            r#"{"op":"update","table":"User","key":"Ghost","prop":"age","value":1}"#,
            "Ghost",
        ),
        (
            r#"{"op":"increment","table":"User","key":"Alice","prop":"age","delta":1}"#,
            "counter",
        ),
        (r#"{"op":"teleport","table":"User"}"#, "teleport"),
    ];
    for (line, named) in cases {
        // A good op first: the whole input is one atomic write, so it must not land either.
        let input = format!(
            "{}\n{line}\n",
            r#"{"op":"add_node","table":"User","props":{"name":"Zed"}}"#
        );
        let err = fails(ks_stdin(&["write", p(&a)], &input));
        assert!(
            err.contains(named),
            "error for {line} should name {named}: {err}"
        );
        assert!(err.contains("line 2"), "error should name the line: {err}");
        assert_eq!(snapshot(&a), before, "after {line}");
    }

    // Truncated and corrupted bundles.
    let b = dir.path().join("b");
    ok(ks(&["init", p(&b), "--peer-id", "node_b"]));
    let bundle = dir.path().join("a.bundle");
    export(&a, None, &bundle);
    let bytes = std::fs::read(&bundle).unwrap();
    let before_b = snapshot(&b);
    let truncated = dir.path().join("truncated.bundle");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(ks(&["import", p(&b), p(&truncated)]));
    assert!(err.contains("truncated"), "{err}");
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xFF;
    let corrupted = dir.path().join("corrupted.bundle");
    std::fs::write(&corrupted, &bad).unwrap();
    let err = fails(ks(&["import", p(&b), p(&corrupted)]));
    assert!(err.contains("checksum"), "{err}");
    let err = fails(ks(&[
        "import",
        p(&b),
        p(&dir.path().join("missing.bundle")),
    ]));
    assert!(err.contains("missing.bundle"), "{err}");
    assert_eq!(snapshot(&b), before_b);

    // A bundle that does not connect to the receiver's history is refused, naming the gap.
    ok(ks_stdin(
        &["write", p(&a)],
        r#"{"op":"add_node","table":"User","props":{"name":"Late"}}"#,
    ));
    let vv = status(&a)["version_vector"].clone();
    let mut since = vv.clone();
    since["node_a"] = json(&(vv["node_a"].as_u64().unwrap() - 1).to_string());
    let tail = dir.path().join("tail.bundle");
    export(&a, Some(&since), &tail);
    let err = fails(ks(&["import", p(&b), p(&tail)]));
    assert!(err.contains("causal past is missing"), "{err}");
    assert_eq!(snapshot(&b), before_b);

    // Bad commands name their input.
    assert!(fails(ks(&[
        "init",
        p(&dir.path().join("c")),
        "--peer-id",
        "bad id!"
    ]))
    .contains("bad id!"));
    assert!(fails(ks(&["status", p(&dir.path().join("nowhere"))])).contains("nowhere"));
    let bad_since = fails(ks(&["export", p(&a), "--out", "x", "--since", "[1]"]));
    assert!(bad_since.contains("[1]"), "{bad_since}");
}

/// Kills `kuzu-sync import` with SIGKILL at many points and checks that reopening gives
/// exactly the graph of a replica that never crashed: nothing lost, nothing applied twice
/// (the counters would show a double apply).
#[test]
fn sigkill_during_import_loses_nothing_and_applies_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a", "node_a");
    // ~6,100 events: nodes, edges, counter increments.
    let mut ops = String::new();
    for i in 0..800 {
        ops.push_str(&format!(
            "{{\"op\":\"add_node\",\"table\":\"User\",\"props\":{{\"name\":\"u{i}\",\"age\":{i}}}}}\n"
        ));
    }
    for i in 0..100 {
        ops.push_str(&format!(
            "{{\"op\":\"add_node\",\"table\":\"Product\",\"props\":{{\"id\":{i},\"stock\":0}}}}\n"
        ));
    }
    // 1,200 edges: above the store's COPY threshold, so the import takes the COPY path and its
    // two-step (data, checkpoint, watermark) commit.
    for i in 0..1200 {
        ops.push_str(&format!(
            "{{\"op\":\"add_edge\",\"table\":\"Follows\",\"from\":\"u{}\",\"to\":\"u{}\",\"key\":\"{}\",\"props\":{{\"since\":{i}}}}}\n",
            i % 800,
            (i * 7 + 1) % 800,
            i / 800
        ));
    }
    ok(ks_stdin(&["write", p(&a)], &ops));
    // Many small writes: many events and many separate increments.
    for round in 0..10 {
        let mut w = String::new();
        for i in 0..400 {
            w.push_str(&format!(
                "{{\"op\":\"increment\",\"table\":\"Product\",\"key\":{},\"prop\":\"stock\",\"delta\":{}}}\n",
                (i + round) % 100,
                1 + i % 3
            ));
        }
        ok(ks_stdin(&["write", p(&a)], &w));
    }
    let bundle = dir.path().join("a.bundle");
    export(&a, None, &bundle);

    // The reference: a replica that imports without crashing. The import's duration is
    // the fastest of three (a first run slowed by other work on the machine would put
    // the kill points after most imports have finished).
    let mut full = Duration::MAX;
    let mut reference = dir.path().join("ref");
    for attempt in 0..3 {
        reference = dir.path().join(format!("ref{attempt}"));
        ok(ks(&["init", p(&reference), "--peer-id", "node_b"]));
        let t0 = std::time::Instant::now();
        ok(ks(&["import", p(&reference), p(&bundle)]));
        full = full.min(t0.elapsed());
    }
    let want = snapshot(&reference);

    let crash_points = 50;
    let mut killed = 0;
    for i in 0..crash_points {
        let r = dir.path().join(format!("crash{i}"));
        ok(ks(&["init", p(&r), "--peer-id", "node_b"]));
        // Spread the kill points over the whole import (process start included).
        let delay = full.mul_f64(i as f64 / crash_points as f64 * 1.1);
        let mut child = Command::new(BIN)
            .args(["import", p(&r), p(&bundle)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL on Unix
            killed += 1;
        }
        child.wait().unwrap();
        // Reopen (recovery) and, as a user would, import the bundle again.
        ok(ks(&["import", p(&r), p(&bundle)]));
        let got = snapshot(&r);
        if got != want {
            let diff: Vec<String> = got
                .1
                .iter()
                .zip(&want.1)
                .chain(got.2.iter().zip(&want.2))
                .filter(|(g, w)| g != w)
                .take(5)
                .map(|(g, w)| format!("  got  {g}\n  want {w}"))
                .collect();
            panic!(
                "crash point {i} ({delay:?} into the import): status {} vs {}; {} vs {} nodes, {} vs {} edges; first differences:\n{}",
                got.0,
                want.0,
                got.1.len(),
                want.1.len(),
                got.2.len(),
                want.2.len(),
                diff.join("\n")
            );
        }
    }
    assert!(
        killed >= crash_points / 2,
        "only {killed} of {crash_points} runs were killed before finishing"
    );
}

fn dataset_tables(db: &kuzu_sync_kuzu::kuzu::Database) -> Vec<kuzu_sync_kuzu::DumpTable> {
    use kuzu_sync_kuzu::kuzu::{Connection, Value};
    let conn = Connection::new(db).unwrap();
    let tables: Vec<(String, String)> = conn
        .query("CALL show_tables() RETURN name, type")
        .unwrap()
        .map(|r| (r[0].to_string(), r[1].to_string()))
        .filter(|(n, _)| !n.starts_with("_ks_"))
        .collect();
    let mut out = Vec::new();
    for (name, kind) in tables {
        let cols: Vec<String> = conn
            .query(&format!("CALL table_info('{name}') RETURN *"))
            .unwrap()
            .map(|r| match &r[1] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .filter(|c| !c.starts_with("_ks_"))
            .collect();
        if kind.eq_ignore_ascii_case("REL") {
            let conn_info: Vec<Vec<Value>> = conn
                .query(&format!("CALL show_connection('{name}') RETURN *"))
                .unwrap()
                .collect();
            let r = &conn_info[0];
            let pk = |v: &Value| match v {
                Value::String(s) => s.clone(),
                o => o.to_string(),
            };
            out.push((name, cols, Some((pk(&r[2]), pk(&r[3])))));
        } else {
            out.push((name, cols, None));
        }
    }
    out.sort();
    out
}

/// Plain Kuzu: the dataset's schema.cypher and copy.cypher run as they are.
fn plain_copy(dataset: &Path, db_path: &Path) -> kuzu_sync_kuzu::kuzu::Database {
    use kuzu_sync_kuzu::kuzu::{Connection, Database, SystemConfig};
    let db = Database::new(
        db_path,
        SystemConfig::default()
            .buffer_pool_size(256 << 20)
            .max_db_size(8 << 30),
    )
    .unwrap();
    {
        let conn = Connection::new(&db).unwrap();
        for file in ["schema.cypher", "copy.cypher"] {
            let text = std::fs::read_to_string(dataset.join(file)).unwrap();
            for stmt in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let stmt = stmt.replace("FROM \"", &format!("FROM \"{}/", dataset.display()));
                conn.query(&stmt).unwrap_or_else(|e| panic!("{stmt}: {e}"));
            }
        }
    }
    db
}

/// Loads a dataset through the engine into replica A, moves it by bundle to replica B, and
/// compares every table of B, all columns, as Kuzu's own text, with plain COPY.
fn fidelity(name: &str) -> (usize, String) {
    let ds = datasets().join(name);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    ok(ks(&["init", p(&a), "--peer-id", "loader"]));
    ok(ks(&["schema", p(&a), p(&ds.join("schema.cypher"))]));
    let loaded = json(&ok(ks(&["load", p(&a), p(&ds.join("copy.cypher"))])));
    ok(ks(&["init", p(&b), "--peer-id", "receiver"]));
    let bundle = dir.path().join("a.bundle");
    export(&a, None, &bundle);
    ok(ks(&["import", p(&b), p(&bundle)]));

    let plain = plain_copy(&ds, &dir.path().join("plain.kuzu"));
    let tables = dataset_tables(&plain);
    let want = kuzu_sync_kuzu::text_dump(&plain, &tables);
    drop(plain);
    let replica_db = kuzu_sync_kuzu::kuzu::Database::new(
        b.join("graph.kuzu"),
        kuzu_sync_kuzu::kuzu::SystemConfig::default()
            .buffer_pool_size(256 << 20)
            .max_db_size(8 << 30)
            .read_only(true),
    )
    .unwrap();
    let got = kuzu_sync_kuzu::text_dump(&replica_db, &tables);
    let rows: usize = want.values().map(Vec::len).sum();
    assert_eq!(rows as u64, loaded["rows"].as_u64().unwrap(), "rows loaded");
    for (t, rows) in &want {
        let g = &got[t];
        assert_eq!(g.len(), rows.len(), "{name}: row count of {t}");
        for (w, g) in rows.iter().zip(g) {
            assert_eq!(g, w, "{name}: table {t}");
        }
    }
    let checksum = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        got.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    (rows, checksum)
}

#[test]
fn fidelity_tinysnb_every_type_matches_plain_copy() {
    let (rows, _) = fidelity("tinysnb");
    assert!(rows > 40, "{rows}");
}

/// `adopt` on databases made with plain Kuzu (tinysnb: every Kuzu type; demo-db): every
/// table and column of the new replica equals the source, as Kuzu's own text; the source
/// is not modified; bad sources get clear errors and leave nothing behind.
#[test]
fn adopt_a_plain_kuzu_database_without_loss() {
    for name in ["tinysnb", "demo-db"] {
        let ds = datasets().join(name);
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("plain.kuzu");
        let plain = plain_copy(&ds, &src);
        let tables = dataset_tables(&plain);
        let want = kuzu_sync_kuzu::text_dump(&plain, &tables);
        drop(plain);
        let before = std::fs::read(&src).unwrap();
        let r = dir.path().join("adopted");
        let out = json(&ok(ks(&[
            "adopt",
            p(&r),
            "--from",
            p(&src),
            "--peer-id",
            "adopter",
        ])));
        let rows: usize = want.values().map(Vec::len).sum();
        assert_eq!(
            out["rows"].as_u64().unwrap() as usize,
            rows,
            "{name}: {out}"
        );
        assert_eq!(out["copied"], true);
        assert_eq!(
            std::fs::read(&src).unwrap(),
            before,
            "{name}: the source changed"
        );
        assert!(!r.join("adopt-export").exists(), "the export is cleaned up");
        // The adopted replica replicates like any other: move it by bundle and compare
        // the receiver too.
        let b = dir.path().join("b");
        ok(ks(&["init", p(&b), "--peer-id", "b"]));
        let bundle = dir.path().join("x.bundle");
        export(&r, None, &bundle);
        ok(ks(&["import", p(&b), p(&bundle)]));
        for replica in [&r, &b] {
            let db = kuzu_sync_kuzu::kuzu::Database::new(
                replica.join("graph.kuzu"),
                kuzu_sync_kuzu::kuzu::SystemConfig::default()
                    .buffer_pool_size(256 << 20)
                    .max_db_size(8 << 30)
                    .read_only(true),
            )
            .unwrap();
            let got = kuzu_sync_kuzu::text_dump(&db, &tables);
            for (t, rows) in &want {
                assert_eq!(&got[t], rows, "{name}: table {t} of {}", replica.display());
            }
        }
    }
    // A rel table with two FROM/TO pairs, and edges repeated between the same nodes.
    {
        use kuzu_sync_kuzu::kuzu::{Connection, Database, SystemConfig};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("multi.kuzu");
        let db = Database::new(&src, SystemConfig::default().buffer_pool_size(128 << 20)).unwrap();
        let conn = Connection::new(&db).unwrap();
        for q in [
            "CREATE NODE TABLE User(name STRING, PRIMARY KEY(name))",
            "CREATE NODE TABLE Post(id INT64, body STRING, PRIMARY KEY(id))",
            "CREATE REL TABLE Likes(FROM User TO User, FROM User TO Post, weight DOUBLE)",
            "CREATE (:User {name: 'ann'}), (:User {name: 'bob'}), (:Post {id: 1, body: 'hi'})",
            "MATCH (a:User {name: 'ann'}), (b:User {name: 'bob'}) CREATE (a)-[:Likes {weight: 0.5}]->(b), (a)-[:Likes {weight: 0.7}]->(b)",
            "MATCH (a:User {name: 'bob'}), (p:Post {id: 1}) CREATE (a)-[:Likes {weight: 2.0}]->(p)",
        ] {
            conn.query(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
        drop(conn);
        drop(db);
        let r = dir.path().join("adopted");
        let out = json(&ok(ks(&[
            "adopt",
            p(&r),
            "--from",
            p(&src),
            "--peer-id",
            "m",
        ])));
        assert_eq!(out["rows"], 6, "{out}");
        let likes = query(
            &r,
            "MATCH (a)-[l:Likes]->(b) RETURN label(b) AS to, l.weight AS w ORDER BY w",
        );
        assert_eq!(
            likes,
            vec![
                serde_json::json!({"to": "User", "w": 0.5}),
                serde_json::json!({"to": "User", "w": 0.7}),
                serde_json::json!({"to": "Post", "w": 2.0}),
            ]
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.kuzu");
    let target = dir.path().join("r");
    let err = fails(ks(&[
        "adopt",
        p(&target),
        "--from",
        p(&missing),
        "--peer-id",
        "x",
    ]));
    assert!(err.contains("no such Kuzu database"), "{err}");
    let junk = dir.path().join("junk.kuzu");
    std::fs::write(&junk, b"not a database").unwrap();
    let err = fails(ks(&[
        "adopt",
        p(&target),
        "--from",
        p(&junk),
        "--peer-id",
        "x",
    ]));
    assert!(err.contains("junk.kuzu"), "{err}");
    assert!(!target.exists(), "a failed adopt leaves nothing behind");
}

#[test]
fn fidelity_ldbc_subset_matches_plain_copy() {
    let (rows, _) = fidelity("ldbc-sf01");
    assert!(rows > 150_000, "{rows}");
}

/// The Rust library, as the README shows it: open a replica over Kuzu, write every op
/// kind, read with plain Cypher, move events to a second replica.
#[test]
fn library_api_round_trip() {
    use kuzu_sync_engine::VersionVector;
    let dir = tempfile::tempdir().unwrap();
    let mut a = kuzu_sync::init(&dir.path().join("a"), "node_a").unwrap();
    kuzu_sync::write_json_lines(
        &mut a,
        r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(name STRING, n INT64, PRIMARY KEY(name))"}
{"op":"ddl","cypher":"CREATE REL TABLE Knows(FROM User TO User)"}
{"op":"set_policy","table":"User","prop":"n","policy":"counter"}
{"op":"add_node","table":"User","props":{"name":"Alice","n":1}}
{"op":"add_node","table":"User","props":{"name":"Bob"}}
{"op":"add_edge","table":"Knows","from":"Alice","to":"Bob"}
{"op":"increment","table":"User","key":"Alice","prop":"n","delta":41}"#,
    )
    .unwrap();
    drop(a);
    let a = kuzu_sync::open(&dir.path().join("a")).unwrap();
    let mut b = kuzu_sync::init(&dir.path().join("b"), "node_b").unwrap();
    let outcome = b
        .import(a.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    assert_eq!(outcome.applied, 7);
    let (cols, rows) = b
        .graph()
        .query("MATCH (a:User)-[:Knows]->(b:User) RETURN a.name, a.n, b.name")
        .unwrap();
    assert_eq!(cols, vec!["a.name", "a.n", "b.name"]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][1].to_string(), "42");
}

/// `compact` folds the log into a snapshot without changing the graph; a bundle for a
/// replica behind the floor carries the snapshot; `status` shows the floor; a bad
/// `--forget-peer` is named.
#[test]
fn compact_then_bootstrap_by_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a", "node_a");
    ok(ks_stdin(
        &["write", p(&a)],
        r#"{"op":"add_node","table":"User","props":{"name":"Alice","age":30}}
{"op":"add_node","table":"User","props":{"name":"Bob","age":40}}
{"op":"add_node","table":"Product","props":{"id":1,"stock":100}}
{"op":"add_edge","table":"Follows","from":"Alice","to":"Bob","props":{"since":2020}}
{"op":"increment","table":"Product","key":1,"prop":"stock","delta":-1}"#,
    ));
    let (_, nodes, edges) = snapshot(&a);
    let err = fails(ks(&["compact", p(&a), "--forget-peer", "nobody"]));
    assert!(
        err.contains("\"nobody\"") && err.contains("not a known peer"),
        "{err}"
    );
    let report = json(&ok(ks(&["compact", p(&a)])));
    let stored = status(&a)["events"]["applied"].as_u64().unwrap();
    assert_eq!(report["removed_events"].as_u64(), Some(stored), "{report}");
    assert_eq!(report["remaining_events"], 0);
    assert!(report["snapshot_bytes"].as_u64().unwrap() > 0);
    let st = status(&a);
    assert_eq!(st["events"]["stored"], 0);
    assert_eq!(st["compaction"]["snapshot_events"].as_u64(), Some(stored));
    assert_eq!(st["compaction"]["floor"], st["version_vector"]);
    let (_, nodes_after, edges_after) = snapshot(&a);
    assert_eq!((nodes_after, edges_after), (nodes.clone(), edges.clone()));
    // Compacting again does nothing.
    let again = json(&ok(ks(&["compact", p(&a)])));
    assert_eq!(again["removed_events"], 0);

    // A new replica bootstraps from a bundle: the snapshot, no events.
    let b = dir.path().join("b");
    ok(ks(&["init", p(&b), "--peer-id", "node_b"]));
    let f = dir.path().join("all.bundle");
    let out = export(&a, None, &f);
    assert_eq!(out["snapshot_events"].as_u64(), Some(stored), "{out}");
    assert_eq!(out["events"], 0);
    ok(ks(&["import", p(&b), p(&f)]));
    let (_, nb, eb) = snapshot(&b);
    assert_eq!((nb, eb), (nodes, edges));
    // Later events come as events, and b's own writes go back to a.
    ok(ks_stdin(
        &["write", p(&a)],
        r#"{"op":"increment","table":"Product","key":1,"prop":"stock","delta":-1}"#,
    ));
    ok(ks_stdin(
        &["write", p(&b)],
        r#"{"op":"add_node","table":"User","props":{"name":"Carol"}}"#,
    ));
    let tail = dir.path().join("tail.bundle");
    let out = export(&a, Some(&status(&b)["version_vector"]), &tail);
    assert_eq!(
        (out["snapshot_events"].as_u64(), out["events"].as_u64()),
        (Some(0), Some(1))
    );
    ok(ks(&["import", p(&b), p(&tail)]));
    let back = dir.path().join("back.bundle");
    export(&b, Some(&status(&a)["version_vector"]), &back);
    ok(ks(&["import", p(&a), p(&back)]));
    let (_, na, ea) = snapshot(&a);
    let (_, nb, eb) = snapshot(&b);
    assert_eq!(ea, eb);
    assert_eq!(na, nb);
    assert_eq!(
        status(&a)["graph"]["nodes"],
        4,
        "Alice, Bob, Carol and the product"
    );
    assert_eq!(
        query(&b, "MATCH (p:Product) RETURN p.stock AS s"),
        vec![json(r#"{"s":98}"#)]
    );
}
