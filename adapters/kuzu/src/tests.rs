use super::*;
use kuzu_sync_engine::PeerId;

fn vv(n: u64) -> VersionVector {
    let mut v = VersionVector::new();
    v.set(PeerId::new("p").unwrap(), n);
    v
}

/// A schema holding node table `T(id INT64)`, and that table's definition.
fn table_t() -> (Schema, NodeTableDef) {
    let def = NodeTableDef {
        name: "T".into(),
        columns: vec![Column {
            name: "id".into(),
            ty: DataType::Int64,
            default: None,
        }],
        primary_key: "id".into(),
    };
    (schema_of(&def), def)
}

/// A schema holding node table `def`.
fn schema_of(def: &NodeTableDef) -> Schema {
    let mut schema = Schema::default();
    schema.apply(
        &kuzu_sync_engine::SchemaOp::CreateNodeTable(def.clone()),
        &kuzu_sync_engine::Stamp {
            hlc: Default::default(),
            peer: PeerId::new("p").unwrap(),
            counter: 1,
        },
    );
    schema
}

/// A new node of `T` with key `k`.
fn new_t(k: i64) -> GraphChange {
    GraphChange::UpsertNode {
        node: NodeRef {
            table: "T".into(),
            key: Value::Int64(k),
        },
        values: vec![Value::Int64(k)],
        is_new: true,
        changed: Vec::new(),
    }
}

#[test]
fn watermark_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.kuzu");
    {
        let mut g = KuzuGraphStore::open(&path, &KuzuConfig::small()).unwrap();
        assert_eq!(g.watermark().unwrap(), VersionVector::new());
        g.apply(
            &ApplyBatch {
                changes: vec![],
                watermark: vv(7),
                ..Default::default()
            },
            &Schema::default(),
        )
        .unwrap();
    }
    let mut g = KuzuGraphStore::open(&path, &KuzuConfig::small()).unwrap();
    assert_eq!(g.watermark().unwrap(), vv(7));
}

#[test]
fn a_stale_wal_beside_a_new_database_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.kuzu");
    std::fs::write(sidecar(&path, "wal"), b"left over from an older database").unwrap();
    let mut g = KuzuGraphStore::open(&path, &KuzuConfig::small()).unwrap();
    assert_eq!(g.watermark().unwrap(), VersionVector::new());
}

#[test]
fn a_failing_batch_rolls_back_rows_and_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = KuzuGraphStore::open(&dir.path().join("g.kuzu"), &KuzuConfig::small()).unwrap();
    let (schema, def) = table_t();
    g.apply(
        &ApplyBatch {
            changes: vec![GraphChange::CreateTable(TableDef::Node(def)), new_t(1)],
            watermark: vv(1),
            ..Default::default()
        },
        &schema,
    )
    .unwrap();
    // Inserting key 1 again violates the primary key: the whole batch must roll back.
    let err = g
        .apply(
            &ApplyBatch {
                changes: vec![new_t(2), new_t(1)],
                watermark: vv(2),
                ..Default::default()
            },
            &schema,
        )
        .unwrap_err();
    assert!(err.to_string().contains("T"), "{err}");
    assert_eq!(g.watermark().unwrap(), vv(1));
    assert_eq!(g.dump(&schema).unwrap()["T"], vec![vec![Value::Int64(1)]]);
}

/// Many small committed batches do not fill Kuzu's buffer pool: without the periodic
/// `CHECKPOINT` ([`CHECKPOINT_EVERY`]), Kuzu 0.11.3 kept what each one committed in the pool
/// until its WAL reached 16 MB, and a 256 MiB pool was full after about 31,000 one-node
/// batches (so this 64 MiB one after about 8,000).
#[test]
fn many_small_batches_do_not_fill_the_buffer_pool() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = KuzuGraphStore::open(&dir.path().join("g.kuzu"), &KuzuConfig::small()).unwrap();
    let (schema, def) = table_t();
    g.apply(
        &ApplyBatch {
            changes: vec![GraphChange::CreateTable(TableDef::Node(def))],
            watermark: vv(1),
            ..Default::default()
        },
        &schema,
    )
    .unwrap();
    const BATCHES: i64 = 12_000;
    for k in 0..BATCHES {
        let batch = ApplyBatch {
            changes: vec![new_t(k)],
            watermark: vv(k as u64 + 2),
            ..Default::default()
        };
        if let Err(e) = g.apply(&batch, &schema) {
            panic!("batch {k} of {BATCHES}: {e}");
        }
    }
    assert_eq!(g.dump(&schema).unwrap()["T"].len(), BATCHES as usize);
    assert_eq!(g.watermark().unwrap(), vv(BATCHES as u64 + 1));
}

/// A store in `dir` that sends every update of existing nodes through the stage table.
fn staging_store(dir: &std::path::Path) -> KuzuGraphStore {
    let config = KuzuConfig {
        update_join_threshold: 1,
        ..KuzuConfig::small()
    };
    KuzuGraphStore::open(&dir.join("g.kuzu"), &config).unwrap()
}

/// Applies `changes` as one batch whose watermark is `vv(watermark)`.
fn apply(g: &mut KuzuGraphStore, schema: &Schema, changes: Vec<GraphChange>, watermark: u64) {
    g.apply(
        &ApplyBatch {
            changes,
            watermark: vv(watermark),
            ..Default::default()
        },
        schema,
    )
    .unwrap();
}

/// Updates through the stage table write the columns the engine says changed, and only
/// those: a batch whose `changed` names `b` alone leaves `a` as stored even where its
/// value in the batch differs (which the engine never sends: here it shows the mask is
/// used); an empty `changed` writes every column; rows changing different columns go
/// through one join each.
#[test]
fn staged_updates_write_the_changed_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = staging_store(dir.path());
    let col = |name: &str, ty| Column {
        name: name.into(),
        ty,
        default: None,
    };
    let def = NodeTableDef {
        name: "T".into(),
        columns: vec![
            col("id", DataType::Int64),
            col("a", DataType::String),
            col("b", DataType::Int64),
        ],
        primary_key: "id".into(),
    };
    let schema = schema_of(&def);
    let row = |k: i64, a: &str, b: i64| vec![Value::Int64(k), Value::from(a), Value::Int64(b)];
    let upsert =
        |k: i64, a: &str, b: i64, is_new: bool, changed: Vec<bool>| GraphChange::UpsertNode {
            node: NodeRef {
                table: "T".into(),
                key: Value::Int64(k),
            },
            values: row(k, a, b),
            is_new,
            changed,
        };
    let mut changes = vec![GraphChange::CreateTable(TableDef::Node(def))];
    changes.extend((1..=3).map(|k| upsert(k, "old", 0, true, vec![])));
    apply(&mut g, &schema, changes, 1);
    apply(
        &mut g,
        &schema,
        vec![
            upsert(1, "ignored", 10, false, vec![false, false, true]),
            upsert(2, "new", 20, false, vec![false, true, false]),
            upsert(3, "all", 30, false, vec![]),
        ],
        2,
    );
    assert_eq!(
        g.dump(&schema).unwrap()["T"],
        vec![row(1, "old", 10), row(2, "new", 0), row(3, "all", 30)]
    );
    let (_, rows) = g.query("MATCH (s:_ks_stage_T) RETURN count(*)").unwrap();
    assert_eq!(format!("{rows:?}"), "[[Int64(0)]]", "the stage is emptied");
}

/// A table that has a stage table's name is never dropped or used as a stage: the updates
/// of the table it would stage go row by row. The engine refuses `_ks_` table names, from
/// peers too (`kuzu_sync_s_own_names_are_refused_…`), so only a schema built without its
/// validation, as here, holds one: this is the store's own second line.
#[test]
fn a_user_table_with_a_stage_name_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = staging_store(dir.path());
    let (_, mut t) = table_t();
    t.columns.push(Column {
        name: "v".into(),
        ty: DataType::Int64,
        default: None,
    });
    let mut schema = schema_of(&t);
    let clash = NodeTableDef {
        name: format!("{STAGE_PREFIX}T"),
        ..t.clone()
    };
    schema.apply(
        &kuzu_sync_engine::SchemaOp::CreateNodeTable(clash.clone()),
        &kuzu_sync_engine::Stamp {
            hlc: Default::default(),
            peer: PeerId::new("p").unwrap(),
            counter: 2,
        },
    );
    let node = |table: &str, k: i64, is_new: bool| GraphChange::UpsertNode {
        node: NodeRef {
            table: table.into(),
            key: Value::Int64(k),
        },
        values: vec![Value::Int64(k), Value::Int64(k * 10 + i64::from(!is_new))],
        is_new,
        changed: Vec::new(),
    };
    apply(
        &mut g,
        &schema,
        vec![
            GraphChange::CreateTable(TableDef::Node(t)),
            GraphChange::CreateTable(TableDef::Node(clash.clone())),
            node("T", 1, true),
            node(&clash.name, 7, true),
        ],
        1,
    );
    apply(&mut g, &schema, vec![node("T", 1, false)], 2);
    let dump = g.dump(&schema).unwrap();
    assert_eq!(
        dump[&clash.name],
        vec![vec![Value::Int64(7), Value::Int64(70)]]
    );
    assert_eq!(dump["T"], vec![vec![Value::Int64(1), Value::Int64(11)]]);
}

/// New nodes go by COPY from the node threshold up, or from the edge threshold up in a
/// batch that copies edges too (it pays the checkpoint anyway); the rows are the same
/// whichever path they took.
#[test]
fn a_batch_that_copies_edges_copies_its_nodes_from_the_edge_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let config = KuzuConfig {
        node_copy_threshold: 1_000_000,
        edge_copy_threshold: 3,
        ..KuzuConfig::small()
    };
    let mut g = KuzuGraphStore::open(&dir.path().join("g.kuzu"), &config).unwrap();
    let (mut schema, def) = table_t();
    let rel = RelTableDef {
        name: "R".into(),
        connections: vec![("T".into(), "T".into())],
        columns: vec![],
        multiplicity: kuzu_sync_engine::schema::Multiplicity::ManyMany,
    };
    schema.apply(
        &kuzu_sync_engine::SchemaOp::CreateRelTable(rel.clone()),
        &kuzu_sync_engine::Stamp {
            hlc: Default::default(),
            peer: PeerId::new("p").unwrap(),
            counter: 2,
        },
    );
    let edge = |a: i64, b: i64| GraphChange::UpsertEdge {
        edge: EdgeRef {
            table: "R".into(),
            from: NodeRef {
                table: "T".into(),
                key: Value::Int64(a),
            },
            to: NodeRef {
                table: "T".into(),
                key: Value::Int64(b),
            },
            key: String::new(),
        },
        values: vec![],
        is_new: true,
    };
    let mut changes = vec![
        GraphChange::CreateTable(TableDef::Node(def)),
        GraphChange::CreateTable(TableDef::Rel(rel)),
    ];
    changes.extend((1..=4).map(new_t));
    apply(&mut g, &schema, changes, 1);
    assert_eq!(g.csv_copies(), 0, "4 nodes alone: UNWIND … CREATE");
    let mut changes: Vec<GraphChange> = (10..14).map(new_t).collect();
    changes.extend([edge(1, 2), edge(2, 3), edge(3, 10)]);
    apply(&mut g, &schema, changes, 2);
    assert_eq!(
        g.csv_copies(),
        2,
        "4 nodes beside 3 copied edges: both copied"
    );
    let mut changes: Vec<GraphChange> = (20..22).map(new_t).collect();
    changes.extend([edge(4, 20), edge(20, 21), edge(21, 13)]);
    apply(&mut g, &schema, changes, 3);
    assert_eq!(
        g.csv_copies(),
        3,
        "2 nodes, under the edge threshold: not copied"
    );
    let dump = g.dump(&schema).unwrap();
    let keys: Vec<i64> = dump["T"]
        .iter()
        .map(|r| match r[0] {
            Value::Int64(k) => k,
            ref v => panic!("{v:?}"),
        })
        .collect();
    assert_eq!(keys, [1, 2, 3, 4, 10, 11, 12, 13, 20, 21]);
    assert_eq!(dump["R"].len(), 6);
    assert_eq!(g.watermark().unwrap(), vv(3));
}
