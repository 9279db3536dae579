use serde_json::json;

use super::*;
use crate::clock::{Hlc, PeerId, Stamp};
use crate::ddl::{parse_data_type, parse_ddl};

fn schema() -> Schema {
    let script = "
        CREATE NODE TABLE User(name STRING, age INT64, PRIMARY KEY (name));
        CREATE NODE TABLE City(name STRING, population INT64, PRIMARY KEY (name));
        CREATE REL TABLE Follows(FROM User TO User, since INT64);
        CREATE REL TABLE LivesIn(FROM User TO City);
        CREATE NODE TABLE Product(id STRING, stock INT64 DEFAULT 0, price DECIMAL(10, 2),
            tags STRING[], born DATE, PRIMARY KEY (id));
        CREATE NODE TABLE Item(id INT128, PRIMARY KEY (id));
        CREATE REL TABLE Likes(FROM User TO Product, FROM User TO City, FROM City TO City,
            weight DOUBLE, note STRING);
        CREATE REL TABLE Contains(FROM Product TO Item, qty UINT8);
    ";
    let mut s = Schema::default();
    for (i, p) in parse_ddl(script).unwrap().into_iter().enumerate() {
        let stamp = Stamp {
            hlc: Hlc {
                wall_ms: 1,
                logical: i as u32,
            },
            peer: PeerId::new("p1").unwrap(),
            counter: i as u64 + 1,
        };
        s.validate(&p.op).unwrap();
        s.apply(&p.op, &stamp);
    }
    s
}

fn ty(s: &str) -> DataType {
    parse_data_type(s).unwrap()
}

fn from(j: J, t: &str) -> Result<Value, String> {
    value_from_json(&j, &ty(t))
}

fn op(line: &str) -> Op {
    op_from_json(line, &schema()).unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn op_err(line: &str) -> EngineError {
    op_from_json(line, &schema()).expect_err(line)
}

#[test]
fn converts_numbers_exactly() {
    assert_eq!(from(json!(30), "INT64"), Ok(Value::Int64(30)));
    assert_eq!(from(json!(-128), "INT8"), Ok(Value::Int8(-128)));
    assert_eq!(from(json!(30.0), "INT32"), Ok(Value::Int32(30)));
    assert_eq!(from(json!(u64::MAX), "UINT64"), Ok(Value::UInt64(u64::MAX)));
    assert_eq!(
        from(json!("18446744073709551615"), "UINT64"),
        Ok(Value::UInt64(u64::MAX))
    );
    assert_eq!(
        from(json!("-1844674407370955161511"), "INT128"),
        Ok(Value::Int128(-1844674407370955161511))
    );
    let e = from(json!(128), "INT8").unwrap_err();
    assert!(e.contains("128") && e.contains("INT8"), "{e}");
    let e = from(json!(-1), "UINT32").unwrap_err();
    assert!(e.contains("-1") && e.contains("UINT32"), "{e}");
    let e = from(json!(1.5), "INT64").unwrap_err();
    assert!(e.contains("1.5") && e.contains("fraction"), "{e}");
    let e = from(json!("5"), "INT64").unwrap_err();
    assert!(e.contains("\"5\"") && e.contains("INT64"), "{e}");
    let e = from(json!("x"), "INT128").unwrap_err();
    assert!(e.contains("\"x\""), "{e}");
    let e = from(json!(true), "INT16").unwrap_err();
    assert!(e.contains("true"), "{e}");

    assert_eq!(from(json!(1.5), "DOUBLE"), Ok(Value::Double(1.5)));
    assert_eq!(from(json!(2), "DOUBLE"), Ok(Value::Double(2.0)));
    assert_eq!(from(json!(0.1), "FLOAT"), Ok(Value::Float(0.1)));
    assert_eq!(
        from(json!("-inf"), "DOUBLE"),
        Ok(Value::Double(f64::NEG_INFINITY))
    );
    assert!(from(json!("1.5"), "DOUBLE")
        .unwrap_err()
        .contains("\"1.5\""));
    assert!(from(json!(1e300), "FLOAT").unwrap_err().contains("FLOAT"));

    let dec = |m: i128, s: u8| Value::Decimal {
        mantissa: m,
        scale: s,
    };
    assert_eq!(from(json!(12.5), "DECIMAL(10, 2)"), Ok(dec(1250, 2)));
    assert_eq!(from(json!("12.345"), "DECIMAL(10, 2)"), Ok(dec(1235, 2)));
    assert_eq!(from(json!(7), "DECIMAL(10, 2)"), Ok(dec(700, 2)));
    let e = from(json!(123456), "DECIMAL(5, 2)").unwrap_err();
    assert!(e.contains("123456") && e.contains("DECIMAL(5, 2)"), "{e}");
}

#[test]
fn converts_strings_and_temporal_values() {
    assert_eq!(from(json!("Alice"), "STRING"), Ok("Alice".into()));
    let e = from(json!(5), "STRING").unwrap_err();
    assert!(e.contains("5") && e.contains("STRING"), "{e}");
    assert_eq!(
        from(json!("\\xAA\\xABinteresting\\x0B"), "BLOB"),
        Ok(Value::Blob(
            [&[0xAA, 0xAB][..], b"interesting", &[0x0B]].concat()
        ))
    );
    assert_eq!(
        from(json!("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12}"), "UUID"),
        Ok(Value::Uuid(0xa0eebc99_9c0b_4ef8_bb6d_6bb9bd380a12))
    );
    assert_eq!(from(json!("1970-01-02"), "DATE"), Ok(Value::Date(1)));
    assert_eq!(
        from(json!("1970-01-01 00:00:01Z+00:00"), "TIMESTAMP"),
        Ok(Value::Timestamp(1_000_000))
    );
    assert_eq!(
        from(json!("1970-01-01 00:00:00.000000001"), "TIMESTAMP_NS"),
        Ok(Value::TimestampNs(1))
    );
    assert_eq!(
        from(json!("10 days"), "INTERVAL"),
        Ok(Value::Interval {
            months: 0,
            days: 10,
            micros: 0
        })
    );
    let e = from(json!("yesterday"), "DATE").unwrap_err();
    assert!(e.contains("yesterday"), "{e}");
    assert!(from(json!(20200101), "DATE").unwrap_err().contains("DATE"));
    for t in [
        "BOOL",
        "INT64",
        "STRING",
        "DATE",
        "INT64[]",
        "MAP(STRING, INT64)",
    ] {
        assert_eq!(from(J::Null, t), Ok(Value::Null));
    }
    assert!(from(json!("true"), "BOOL").is_err());
}

#[test]
fn converts_nested_values() {
    assert_eq!(
        from(json!([1, null, 3]), "INT64[]"),
        Ok(Value::List(vec![
            Value::Int64(1),
            Value::Null,
            Value::Int64(3)
        ]))
    );
    let e = from(json!([1, 2]), "INT64[4]").unwrap_err();
    assert!(e.contains("INT64[4]") && e.contains("2 elements"), "{e}");
    let e = from(json!([1, "x"]), "INT64[]").unwrap_err();
    assert!(e.contains("element 1") && e.contains("\"x\""), "{e}");

    let st = "STRUCT(rating DOUBLE, stars INT8, film DATE)";
    assert_eq!(
        from(json!({"stars": 2, "RATING": 5.3}), st),
        Ok(Value::Struct(vec![
            ("rating".into(), Value::Double(5.3)),
            ("stars".into(), Value::Int8(2)),
            ("film".into(), Value::Null),
        ]))
    );
    let e = from(json!({"stars": 2, "bogus": 1}), st).unwrap_err();
    assert!(e.contains("bogus"), "{e}");
    let e = from(json!({"stars": 999}), st).unwrap_err();
    assert!(e.contains("stars") && e.contains("999"), "{e}");

    let map = Value::Map(vec![
        ("a".into(), Value::Int64(1)),
        ("b".into(), Value::Int64(2)),
    ]);
    assert_eq!(
        from(json!([["a", 1], ["b", 2]]), "MAP(STRING, INT64)"),
        Ok(map.clone())
    );
    assert_eq!(from(json!({"a": 1, "b": 2}), "MAP(STRING, INT64)"), Ok(map));
    assert_eq!(
        from(json!([[1, "x"]]), "MAP(INT32, STRING)"),
        Ok(Value::Map(vec![(Value::Int32(1), "x".into())]))
    );
    assert!(from(json!({"1": "x"}), "MAP(INT32, STRING)").is_err());
    assert!(from(json!([[null, "x"]]), "MAP(INT32, STRING)")
        .unwrap_err()
        .contains("null"));
    assert!(from(json!([[1]]), "MAP(INT32, STRING)")
        .unwrap_err()
        .contains("[1]"));

    let un = "UNION(price FLOAT, movein DATE, note STRING)";
    assert_eq!(
        from(json!({"note": "x"}), un),
        Ok(Value::Union {
            tag: "note".into(),
            value: Box::new("x".into())
        })
    );
    assert!(from(json!({"nope": "x"}), un).unwrap_err().contains("nope"));
    assert!(from(json!({"note": "x", "price": 1}), un).is_err());
    assert!(from(json!("x"), un).is_err());
}

#[test]
fn values_to_json() {
    assert_eq!(value_to_json(&Value::Int64(i64::MAX)), json!(i64::MAX));
    assert_eq!(value_to_json(&Value::UInt64(1 << 53)), json!(1u64 << 53));
    assert_eq!(
        value_to_json(&Value::UInt64((1 << 53) + 1)),
        json!("9007199254740993")
    );
    assert_eq!(value_to_json(&Value::Int128(-5)), json!(-5));
    assert_eq!(
        value_to_json(&Value::Int128(i128::MIN)),
        json!("-170141183460469231731687303715884105728")
    );
    assert_eq!(value_to_json(&Value::Float(0.1)), json!(0.1));
    assert_eq!(value_to_json(&Value::Double(f64::NAN)), json!("NaN"));
    assert_eq!(
        value_to_json(&Value::Decimal {
            mantissa: 1250,
            scale: 2
        }),
        json!("12.50")
    );
    assert_eq!(value_to_json(&Value::Date(1)), json!("1970-01-02"));
    assert_eq!(
        value_to_json(&Value::TimestampTz(0)),
        json!("1970-01-01 00:00:00+00")
    );
    assert_eq!(
        value_to_json(&Value::Blob(vec![0xAA, b'a'])),
        json!("\\xAAa")
    );
    assert_eq!(
        value_to_json(&Value::Struct(vec![
            ("b".into(), Value::Int8(1)),
            ("a".into(), Value::Null)
        ])),
        json!({"b": 1, "a": null})
    );
    assert_eq!(
        value_to_json(&Value::Map(vec![(Value::Int32(1), "x".into())])),
        json!([[1, "x"]])
    );
    assert_eq!(
        value_to_json(&Value::Union {
            tag: "t".into(),
            value: Box::new(Value::Bool(true))
        }),
        json!({"t": true})
    );
}

#[test]
fn values_round_trip_through_json() {
    let cases: Vec<(&str, Value)> = vec![
        ("BOOL", Value::Bool(true)),
        ("INT8", Value::Int8(i8::MIN)),
        ("INT16", Value::Int16(i16::MAX)),
        ("INT32", Value::Int32(-7)),
        ("INT64", Value::Int64(i64::MIN)),
        ("INT128", Value::Int128(i128::MAX)),
        ("INT128", Value::Int128(1 << 53)),
        ("UINT8", Value::UInt8(u8::MAX)),
        ("UINT16", Value::UInt16(9)),
        ("UINT32", Value::UInt32(u32::MAX)),
        ("UINT64", Value::UInt64(u64::MAX)),
        ("FLOAT", Value::Float(1.731)),
        ("FLOAT", Value::Float(f32::MIN_POSITIVE)),
        ("FLOAT", Value::Float(-0.0)),
        ("FLOAT", Value::Float(f32::INFINITY)),
        ("DOUBLE", Value::Double(0.1 + 0.2)),
        ("DOUBLE", Value::Double(f64::MAX)),
        (
            "DECIMAL(38, 5)",
            Value::Decimal {
                mantissa: -12_345_678_901_234_567_890_123_456_789_012_345,
                scale: 5,
            },
        ),
        ("STRING", Value::String("héllo \"x\" \\".into())),
        ("BLOB", Value::Blob((0..=255).collect())),
        ("UUID", Value::Uuid(u128::MAX)),
        ("DATE", Value::Date(-719_528)),
        ("TIMESTAMP", Value::Timestamp(-1)),
        ("TIMESTAMP_NS", Value::TimestampNs(i64::MAX)),
        ("TIMESTAMP_MS", Value::TimestampMs(i64::MIN)),
        ("TIMESTAMP_SEC", Value::TimestampSec(1_700_000_000)),
        ("TIMESTAMP_TZ", Value::TimestampTz(1_313_839_530_000_000)),
        (
            "INTERVAL",
            Value::Interval {
                months: 14,
                days: 3,
                micros: 1,
            },
        ),
        (
            "INT64[][]",
            Value::List(vec![
                Value::List(vec![Value::Int64(10), Value::Int64(8)]),
                Value::Null,
                Value::List(vec![]),
            ]),
        ),
        (
            "DOUBLE[2]",
            Value::List(vec![Value::Double(7.82), Value::Double(3.54)]),
        ),
        (
            "STRUCT(locations STRING[], transfer STRUCT(day DATE, amount INT64[]))",
            Value::Struct(vec![
                ("locations".into(), Value::List(vec!["toronto".into()])),
                (
                    "transfer".into(),
                    Value::Struct(vec![
                        ("day".into(), Value::Date(18629)),
                        ("amount".into(), Value::List(vec![Value::Int64(100)])),
                    ]),
                ),
            ]),
        ),
        (
            "MAP(STRING, STRING)",
            Value::Map(vec![("z".into(), "1".into()), ("a".into(), Value::Null)]),
        ),
        (
            "MAP(DATE, INT64)",
            Value::Map(vec![(Value::Date(3), Value::Int64(1))]),
        ),
        (
            "UNION(credit BOOLEAN, grade1 DOUBLE, grade2 INT64)",
            Value::Union {
                tag: "grade2".into(),
                value: Box::new(Value::Int64(254)),
            },
        ),
    ];
    for (t, v) in cases {
        let t = ty(t);
        assert!(v.conforms_to(&t), "{t} {v:?}");
        let j = value_to_json(&v);
        assert_eq!(value_from_json(&j, &t), Ok(v.clone()), "{t}: {j}");
        // And through the JSON text too.
        let back: J = serde_json::from_str(&j.to_string()).unwrap();
        assert_eq!(value_from_json(&back, &t), Ok(v), "{t}: {j}");
    }
}

#[test]
fn parses_every_op_form() {
    let alice = || NodeRef {
        table: "User".into(),
        key: "Alice".into(),
    };
    let follows = |key: &str| EdgeRef {
        table: "Follows".into(),
        from: NodeRef {
            table: "User".into(),
            key: "Adam".into(),
        },
        to: NodeRef {
            table: "User".into(),
            key: "Karissa".into(),
        },
        key: key.into(),
    };
    assert_eq!(
        op(r#"{"op":"add_node","table":"user","props":{"AGE":30,"name":"Alice"}}"#),
        Op::AddNode {
            table: "User".into(),
            props: vec![
                ("name".into(), "Alice".into()),
                ("age".into(), Value::Int64(30))
            ],
        }
    );
    assert_eq!(
        op(
            r#"{"op":"add_edge","table":"Follows","from":"Adam","to":"Karissa","props":{"since":2020}}"#
        ),
        Op::AddEdge {
            edge: follows(""),
            props: vec![("since".into(), Value::Int64(2020))],
        }
    );
    assert_eq!(
        op(
            r#"{"op":"add_edge","table":"follows","from":"Adam","to":"Karissa","key":"k1","from_table":"USER"}"#
        ),
        Op::AddEdge {
            edge: follows("k1"),
            props: vec![],
        }
    );
    assert_eq!(
        op(r#"{"op":"update","table":"User","key":"Alice","prop":"age","value":31}"#),
        Op::Update {
            entity: Entity::Node(alice()),
            prop: "age".into(),
            value: Value::Int64(31),
        }
    );
    assert_eq!(
        op(r#"{"op":"update","table":"User","key":"Alice","prop":"age","value":null}"#),
        Op::Update {
            entity: Entity::Node(alice()),
            prop: "age".into(),
            value: Value::Null,
        }
    );
    assert_eq!(
        op(
            r#"{"op":"update","table":"Follows","from":"Adam","to":"Karissa","prop":"Since","value":2021}"#
        ),
        Op::Update {
            entity: Entity::Edge(follows("")),
            prop: "since".into(),
            value: Value::Int64(2021),
        }
    );
    assert_eq!(
        op(r#"{"op":"increment","table":"Product","key":"p1","prop":"stock","delta":-5}"#),
        Op::Increment {
            entity: Entity::Node(NodeRef {
                table: "Product".into(),
                key: "p1".into()
            }),
            prop: "stock".into(),
            delta: Value::Int64(-5),
        }
    );
    assert_eq!(
        op(r#"{"op":"delete_node","table":"User","key":"Alice"}"#),
        Op::DeleteNode(alice())
    );
    assert_eq!(
        op(r#"{"op":"delete_edge","table":"Follows","from":"Adam","to":"Karissa","key":"k"}"#),
        Op::DeleteEdge(follows("k"))
    );
    assert_eq!(
        op(r#"{"op":"set_policy","table":"product","prop":"STOCK","policy":"counter"}"#),
        Op::Schema(SchemaOp::SetPolicy {
            table: "Product".into(),
            column: "stock".into(),
            policy: Policy::Counter,
        })
    );
    // Multi-pair rel tables pick the pair from from_table/to_table.
    let Op::AddEdge { edge, .. } = op(
        r#"{"op":"add_edge","table":"Likes","from":"Toronto","to":"Paris","from_table":"city","to_table":"city"}"#,
    ) else {
        panic!()
    };
    assert_eq!(edge.from.table, "City");
    assert_eq!(edge.to.table, "City");
    let Op::AddEdge { edge, .. } =
        op(r#"{"op":"add_edge","table":"Likes","from":"Adam","to":"p1","to_table":"Product"}"#)
    else {
        panic!()
    };
    assert_eq!(
        (edge.from.table.as_str(), edge.to.table.as_str()),
        ("User", "Product")
    );
    // Endpoint keys are typed by the endpoint tables' keys.
    let Op::DeleteEdge(edge) = op(
        r#"{"op":"delete_edge","table":"Contains","from":"p1","to":"123456789012345678901234567890"}"#,
    ) else {
        panic!()
    };
    assert_eq!(
        edge.to.key,
        Value::Int128(123_456_789_012_345_678_901_234_567_890)
    );
}

#[test]
fn ops_round_trip_through_json() {
    let lines = [
        r#"{"op":"add_node","table":"User","props":{"name":"Alice","age":30}}"#,
        r#"{"op":"add_node","table":"Product","props":{"id":"p1","stock":0,"price":"12.5","tags":["a","b"],"born":"2020-01-01"}}"#,
        r#"{"op":"add_edge","table":"Follows","from":"Adam","to":"Karissa","props":{"since":2020}}"#,
        r#"{"op":"add_edge","table":"Follows","from":"Adam","to":"Karissa","key":"second"}"#,
        r#"{"op":"add_edge","table":"Likes","from":"a","to":"b","from_table":"City","to_table":"City","props":{"weight":0.5,"note":null}}"#,
        r#"{"op":"update","table":"User","key":"Adam","prop":"age","value":31}"#,
        r#"{"op":"update","table":"Follows","from":"Adam","to":"Karissa","key":"x","prop":"since","value":2021}"#,
        r#"{"op":"increment","table":"Product","key":"p1","prop":"stock","delta":-5}"#,
        r#"{"op":"increment","table":"Likes","from":"u","to":"p","to_table":"Product","prop":"weight","delta":1.5}"#,
        r#"{"op":"delete_node","table":"Item","key":"-170141183460469231731687303715884105728"}"#,
        r#"{"op":"delete_edge","table":"Follows","from":"Adam","to":"Karissa"}"#,
        r#"{"op":"delete_edge","table":"Contains","from":"p","to":5,"key":"k"}"#,
        r#"{"op":"set_policy","table":"Product","prop":"stock","policy":"counter"}"#,
        r#"{"op":"set_policy","table":"Product","prop":"stock","policy":"lww"}"#,
    ];
    let s = schema();
    for line in lines {
        let parsed = op_from_json(line, &s).unwrap_or_else(|e| panic!("{line}: {e}"));
        let j = op_to_json(&parsed);
        let again = op_from_json(&j.to_string(), &s).unwrap_or_else(|e| panic!("{j}: {e}"));
        assert_eq!(again, parsed, "{line} -> {j}");
    }
    // The exact output format.
    assert_eq!(
        op_to_json(&op(
            r#"{"op":"add_node","table":"user","props":{"name":"Alice","age":30}}"#
        )),
        json!({"op":"add_node","table":"User","props":{"name":"Alice","age":30}})
    );
    assert_eq!(
        op_to_json(&op(
            r#"{"op":"delete_edge","table":"Follows","from":"Adam","to":"Karissa","key":"k"}"#
        )),
        json!({"op":"delete_edge","table":"Follows","from":"Adam","to":"Karissa",
               "from_table":"User","to_table":"User","key":"k"})
    );
    assert_eq!(
        op_to_json(&op(
            r#"{"op":"update","table":"User","key":"Adam","prop":"age","value":31}"#
        )),
        json!({"op":"update","table":"User","key":"Adam","prop":"age","value":31})
    );
    // Schema ops print as DDL that the DDL parser reads back.
    let create = parse_ddl("CREATE NODE TABLE T (id INT64 DEFAULT 1, PRIMARY KEY (id))")
        .unwrap()
        .remove(0)
        .op;
    let j = op_to_json(&Op::Schema(create.clone()));
    assert_eq!(j["op"], "ddl");
    assert_eq!(
        parse_ddl(j["cypher"].as_str().unwrap()).unwrap()[0].op,
        create
    );
}

#[test]
fn op_errors_name_the_problem() {
    match op_err("{not json") {
        EngineError::Parse { what, .. } => assert_eq!(what, "op"),
        other => panic!("{other:?}"),
    }
    match op_err("[1]") {
        EngineError::Parse { what, reason } => {
            assert_eq!(what, "op");
            assert!(reason.contains("[1]"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        op_err(r#"{"op":"add_node","table":"Nope","props":{}}"#),
        EngineError::UnknownTable("Nope".into())
    );
    assert_eq!(
        op_err(r#"{"op":"add_node","table":"User","props":{"name":"A","height":3}}"#),
        EngineError::UnknownColumn {
            table: "User".into(),
            column: "height".into()
        }
    );
    match op_err(r#"{"op":"add_node","table":"User","props":{"name":"A","age":"old"}}"#) {
        EngineError::TypeMismatch {
            table,
            column,
            expected,
            value,
        } => {
            assert_eq!(
                (table.as_str(), column.as_str(), expected.as_str()),
                ("User", "age", "INT64")
            );
            assert!(value.contains("\"old\""), "{value}");
        }
        other => panic!("{other:?}"),
    }
    match op_err(r#"{"op":"update","table":"User","key":5,"prop":"age","value":1}"#) {
        EngineError::TypeMismatch { column, value, .. } => {
            assert_eq!(column, "name");
            assert!(value.contains('5'), "{value}");
        }
        other => panic!("{other:?}"),
    }
    match op_err(r#"{"op":"add_edge","table":"Contains","from":"p","to":"x"}"#) {
        EngineError::TypeMismatch { table, column, .. } => {
            assert_eq!((table.as_str(), column.as_str()), ("Item", "id"));
        }
        other => panic!("{other:?}"),
    }
    let invalid = |line: &str, needle: &str| match op_err(line) {
        e @ EngineError::InvalidOp { .. } => {
            let s = e.to_string();
            assert!(s.contains(needle), "{line}: {s}");
        }
        other => panic!("{line}: {other:?}"),
    };
    invalid(
        r#"{"op":"add_node","table":"User","props":{"name":"A"},"extra":1}"#,
        "\"extra\"",
    );
    invalid(
        r#"{"op":"add_node","table":"User","props":{"age":3}}"#,
        "primary key name",
    );
    invalid(
        r#"{"op":"add_node","table":"User","props":{"name":null}}"#,
        "primary key name",
    );
    invalid(
        r#"{"op":"add_node","table":"User","props":[]}"#,
        "\"props\" must be an object",
    );
    invalid(r#"{"op":"add_node","table":"User"}"#, "\"props\"");
    invalid(r#"{"op":"upsert","table":"User"}"#, "\"upsert\"");
    invalid(
        r#"{"op":"ddl","cypher":"CREATE NODE TABLE X(id INT64, PRIMARY KEY(id))"}"#,
        "ddl",
    );
    invalid(r#"{"table":"User"}"#, "\"op\"");
    invalid(r#"{"op":5}"#, "\"op\" must be a string");
    invalid(
        r#"{"op":"update","table":"User","key":"A","prop":"name","value":"B"}"#,
        "primary key",
    );
    invalid(
        r#"{"op":"update","table":"User","key":"A","prop":"age"}"#,
        "\"value\"",
    );
    invalid(
        r#"{"op":"update","table":"User","key":"A","from":"x","prop":"age","value":1}"#,
        "\"from\"",
    );
    invalid(
        r#"{"op":"update","table":"Follows","key":"A","prop":"since","value":1}"#,
        "\"from\"",
    );
    invalid(
        r#"{"op":"increment","table":"Product","key":"p","prop":"tags","delta":1}"#,
        "numeric",
    );
    invalid(
        r#"{"op":"increment","table":"Product","key":"p","prop":"stock","delta":null}"#,
        "null",
    );
    invalid(
        r#"{"op":"delete_node","table":"User","key":null}"#,
        "cannot be null",
    );
    invalid(r#"{"op":"delete_node","table":"User"}"#, "\"key\"");
    invalid(
        r#"{"op":"add_edge","table":"Likes","from":"a","to":"b"}"#,
        "from_table",
    );
    invalid(
        r#"{"op":"add_edge","table":"Likes","from":"a","to":"b","from_table":"Product"}"#,
        "FROM Product TO *",
    );
    invalid(
        r#"{"op":"add_edge","table":"Follows","from":"a","to":"b","key":7}"#,
        "\"key\" must be a string",
    );
    invalid(
        r#"{"op":"set_policy","table":"Product","prop":"stock","policy":"max"}"#,
        "\"max\"",
    );
    assert_eq!(
        op_err(r#"{"op":"add_node","table":"Follows","props":{}}"#),
        EngineError::WrongTableKind {
            table: "Follows".into(),
            expected: "node"
        }
    );
    assert_eq!(
        op_err(r#"{"op":"delete_edge","table":"User","from":"a","to":"b"}"#),
        EngineError::WrongTableKind {
            table: "User".into(),
            expected: "rel"
        }
    );
    assert_eq!(
        op_err(r#"{"op":"set_policy","table":"Product","prop":"nope","policy":"lww"}"#),
        EngineError::UnknownColumn {
            table: "Product".into(),
            column: "nope".into()
        }
    );
}

#[test]
fn op_lines_use_the_tables_their_ddl_lines_create_and_errors_name_the_line() {
    let text = r#"
# a comment
{"op":"ddl","cypher":"CREATE NODE TABLE T(id INT64, n INT64, PRIMARY KEY(id))"}
{"op":"set_policy","table":"T","prop":"n","policy":"counter"}
{"op":"add_node","table":"t","props":{"id":1}}
"#;
    let ops = parse_op_lines(text, &Schema::default()).unwrap();
    assert_eq!(
        ops.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(matches!(&ops[2].1, Op::AddNode { table, .. } if table == "T"));
    let err = parse_op_lines(
        &format!("{text}{{\"op\":\"add_node\",\"table\":\"T\",\"props\":{{\"id\":\"x\"}}}}\n"),
        &Schema::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("line 6: "), "{err}");
    let err = parse_op_lines("{nope", &Schema::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("line 1: ") && err.contains("malformed JSON"),
        "{err}"
    );
}
