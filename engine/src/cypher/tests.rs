//! The shapes of the generated statements. That they do what they say is checked on real
//! Kuzu: `adapters/kuzu` runs the graph-store conformance suite through them.

use super::*;
use crate::change::{ApplyBatch, GraphChange};
use crate::clock::{PeerId, VersionVector};
use crate::event::NodeRef;
use crate::schema::{Column, NodeTableDef, SchemaOp, TableDef};
use crate::state::Engine;
use crate::value::{DataType, Value};

fn user_table() -> NodeTableDef {
    NodeTableDef {
        name: "User".into(),
        columns: vec![
            Column {
                name: "name".into(),
                ty: DataType::String,
                default: None,
            },
            Column {
                name: "age".into(),
                ty: DataType::Int64,
                default: None,
            },
        ],
        primary_key: "name".into(),
    }
}

fn schema_with_user() -> crate::schema::Schema {
    let mut e = Engine::new(PeerId::new("p").unwrap());
    let ev = e
        .prepare(Op::Schema(SchemaOp::CreateNodeTable(user_table())), 1)
        .unwrap();
    e.apply(&ev).unwrap();
    e.schema().clone()
}

use crate::event::Op;

/// Values travel as `'v'` + text, NULL as `''`: never null, never a non-string, whatever
/// the value, so a JS host's parameter typing cannot bend them.
#[test]
fn every_value_is_a_non_null_string() {
    assert_eq!(encode(&Value::Null), "");
    assert_eq!(
        encode(&Value::Int64(9_007_199_254_740_993)),
        "v9007199254740993"
    );
    assert_eq!(encode(&Value::String(String::new())), "v");
    assert_eq!(
        encode(&Value::List(vec![Value::Int64(1), Value::Null])),
        "v[1,NULL]"
    );
    assert_eq!(
        decode("$k", &DataType::Int64),
        "CASE WHEN concat($k, '') = '' THEN NULL ELSE CAST(substring(concat($k, ''), 2, \
         2147483647) AS INT64) END"
    );
    assert_eq!(
        decode("r.c0", &DataType::String),
        "CASE WHEN r.c0 = '' THEN NULL ELSE substring(r.c0, 2, 2147483647) END"
    );
}

/// DDL comes first and is idempotent; the data ends with the watermark; new nodes go in
/// one `UNWIND` whose rows all have the same fields; an empty batch still moves the
/// watermark; no statement gets an empty row list.
#[test]
fn plan_shape() {
    let schema = schema_with_user();
    let wm: VersionVector = [(PeerId::new("p").unwrap(), 3)].into_iter().collect();
    let node = |n: &str, age: Value| GraphChange::UpsertNode {
        node: NodeRef {
            table: "User".into(),
            key: Value::from(n),
        },
        values: vec![Value::from(n), age],
        is_new: true,
        changed: Vec::new(),
    };
    let batch = ApplyBatch {
        changes: vec![
            GraphChange::CreateTable(TableDef::Node(user_table())),
            node("ann", Value::Null),
            node("bob", Value::Int64(4)),
        ],
        watermark: wm.clone(),
        may_exist: false,
    };
    let p = plan(&batch, &schema).unwrap();
    assert_eq!(p.ddl.len(), 2);
    assert!(
        p.ddl.iter().all(|d| d.contains("IF NOT EXISTS")),
        "{:?}",
        p.ddl
    );
    assert_eq!(p.data.len(), 2, "{:?}", p.data);
    assert!(p.data[0]
        .cypher
        .starts_with("UNWIND $rows AS r CREATE (n:`User`"));
    let Param::Rows(rows) = &p.data[0].params[0].1 else {
        panic!("{:?}", p.data[0]);
    };
    assert_eq!(
        rows,
        &vec![
            vec![
                ("c0".to_string(), "vann".to_string()),
                ("c1".into(), String::new())
            ],
            vec![
                ("c0".to_string(), "vbob".to_string()),
                ("c1".into(), "v4".into())
            ],
        ]
    );
    let last = p.data.last().unwrap();
    assert!(last.cypher.contains("'watermark'"));
    assert_eq!(
        last.params,
        vec![(
            "v".to_string(),
            Param::Text(serde_json::to_string(&wm).unwrap())
        )]
    );

    // Under recovery, new nodes are merged one by one (they may exist already).
    let again = plan(
        &ApplyBatch {
            may_exist: true,
            ..batch
        },
        &schema,
    )
    .unwrap();
    assert!(
        again.data[0].cypher.starts_with("MERGE (n:`User`"),
        "{:?}",
        again.data
    );
    assert!(again.data.iter().all(|s| s
        .params
        .iter()
        .all(|(_, p)| !matches!(p, Param::Rows(r) if r.is_empty()))));

    let empty = plan(
        &ApplyBatch {
            changes: vec![],
            watermark: wm,
            may_exist: false,
        },
        &schema,
    )
    .unwrap();
    assert_eq!(empty.data.len(), 1);
    assert!(plan(
        &ApplyBatch {
            changes: vec![GraphChange::DeleteNode(NodeRef {
                table: "Ghost".into(),
                key: Value::Int64(1),
            })],
            ..ApplyBatch::default()
        },
        &schema
    )
    .is_err());
}
