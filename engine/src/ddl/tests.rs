use super::*;
use crate::schema::Policy;

fn dataset(rel: &str) -> String {
    let path = format!(
        "{}/../../shared/datasets/{rel}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn table<'a>(ops: &'a [ParsedDdl], name: &str) -> &'a SchemaOp {
    &ops.iter()
        .find(|p| p.op.table().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("no table {name}"))
        .op
}

fn node(op: &SchemaOp) -> &NodeTableDef {
    match op {
        SchemaOp::CreateNodeTable(n) => n,
        other => panic!("not a node table: {other:?}"),
    }
}

fn rel(op: &SchemaOp) -> &RelTableDef {
    match op {
        SchemaOp::CreateRelTable(r) => r,
        other => panic!("not a rel table: {other:?}"),
    }
}

fn col<'a>(columns: &'a [Column], name: &str) -> &'a Column {
    columns
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn parse_err(script: &str) -> String {
    parse_ddl(script)
        .expect_err(&format!("{script:?} should not parse"))
        .to_string()
}

/// The def a rendered Kuzu DDL parses back to: minus the hidden edge-key column.
fn strip_edge_key(op: SchemaOp) -> SchemaOp {
    match op {
        SchemaOp::CreateRelTable(mut r) => {
            assert_eq!(r.columns[0].name, EDGE_KEY_COLUMN);
            assert_eq!(r.columns[0].ty, DataType::String);
            r.columns.remove(0);
            SchemaOp::CreateRelTable(r)
        }
        other => other,
    }
}

fn round_trip(op: &SchemaOp) {
    let def = match op {
        SchemaOp::CreateNodeTable(n) => TableDef::Node(n.clone()),
        SchemaOp::CreateRelTable(r) => TableDef::Rel(r.clone()),
        other => panic!("{other:?}"),
    };
    let kuzu = render_table_ddl(&def);
    let back = parse_ddl(&kuzu).unwrap_or_else(|e| panic!("{kuzu}: {e}"));
    assert_eq!(back.len(), 1);
    assert_eq!(strip_edge_key(back[0].op.clone()), *op, "{kuzu}");
    let user = render_schema_op(op).unwrap();
    let back = parse_ddl(&user).unwrap_or_else(|e| panic!("{user}: {e}"));
    assert_eq!(back[0].op, *op, "{user}");
}

#[test]
fn parses_tinysnb_schema() {
    let ops = parse_ddl(&dataset("tinysnb/schema.cypher")).unwrap();
    assert_eq!(ops.len(), 8);
    assert!(ops.iter().all(|p| !p.if_not_exists));

    let person = node(table(&ops, "person"));
    assert_eq!(person.primary_key, "ID");
    assert_eq!(person.columns.len(), 16);
    assert_eq!(col(&person.columns, "ID").ty, DataType::Int64);
    assert_eq!(col(&person.columns, "fName").ty, DataType::String);
    assert_eq!(col(&person.columns, "isStudent").ty, DataType::Bool);
    assert_eq!(
        col(&person.columns, "lastJobDuration").ty,
        DataType::Interval
    );
    assert_eq!(
        col(&person.columns, "grades").ty,
        DataType::Array(Box::new(DataType::Int64), 4)
    );
    assert_eq!(
        col(&person.columns, "courseScoresPerTerm").ty,
        DataType::List(Box::new(DataType::List(Box::new(DataType::Int64))))
    );
    assert_eq!(col(&person.columns, "height").ty, DataType::Float);
    assert_eq!(col(&person.columns, "u").ty, DataType::Uuid);

    let org = node(table(&ops, "organisation"));
    assert_eq!(
        col(&org.columns, "info").ty,
        DataType::Union(vec![
            ("price".into(), DataType::Float),
            ("movein".into(), DataType::Date),
            ("note".into(), DataType::String),
        ])
    );
    assert_eq!(
        col(&org.columns, "state").ty.to_string(),
        "STRUCT(revenue INT16, location STRING[], stock STRUCT(price INT64[], volume INT64))"
    );

    let movies = node(table(&ops, "movies"));
    assert_eq!(movies.primary_key, "name");
    let DataType::Struct(fields) = &col(&movies.columns, "description").ty else {
        panic!("description is not a struct")
    };
    let types: Vec<String> = fields.iter().map(|(n, t)| format!("{n} {t}")).collect();
    assert_eq!(
        types,
        [
            "rating DOUBLE",
            "stars INT8",
            "views INT64",
            "release TIMESTAMP",
            "release_ns TIMESTAMP_NS",
            "release_ms TIMESTAMP_MS",
            "release_sec TIMESTAMP_SEC",
            "release_tz TIMESTAMP_TZ",
            "film DATE",
            "u8 UINT8",
            "u16 UINT16",
            "u32 UINT32",
            "u64 UINT64",
            "hugedata INT128",
        ]
    );
    assert_eq!(col(&movies.columns, "content").ty, DataType::Blob);
    assert_eq!(
        col(&movies.columns, "audience").ty,
        DataType::Map(Box::new(DataType::String), Box::new(DataType::Int64))
    );

    let knows = rel(table(&ops, "knows"));
    assert_eq!(knows.multiplicity, Multiplicity::ManyMany);
    assert_eq!(knows.connections, [("person".into(), "person".into())]);
    assert_eq!(knows.columns.len(), 7);
    let marries = rel(table(&ops, "marries"));
    assert_eq!(marries.multiplicity, Multiplicity::OneOne);
    let study = rel(table(&ops, "studyAt"));
    assert_eq!(study.multiplicity, Multiplicity::ManyOne);
    assert_eq!(
        study.connections,
        [("person".into(), "organisation".into())]
    );
    assert_eq!(col(&study.columns, "code").ty, DataType::UInt64);
    // Kuzu reads INT as INT32.
    let meets = rel(table(&ops, "meets"));
    assert_eq!(col(&meets.columns, "times").ty, DataType::Int32);
    assert_eq!(
        col(&meets.columns, "location").ty,
        DataType::Array(Box::new(DataType::Float), 2)
    );

    for p in &ops {
        round_trip(&p.op);
    }
}

#[test]
fn parses_ldbc_and_demo_schemas() {
    let ops = parse_ddl(&dataset("ldbc-sf01/schema.cypher")).unwrap();
    assert_eq!(ops.len(), 17);
    let has_mod = rel(table(&ops, "hasModerator"));
    assert_eq!(has_mod.multiplicity, Multiplicity::ManyMany);
    assert!(has_mod.columns.is_empty());
    let study = rel(table(&ops, "studyAt"));
    assert_eq!(study.multiplicity, Multiplicity::ManyOne);
    assert_eq!(col(&study.columns, "classYear").ty, DataType::Int32);
    for p in &ops {
        round_trip(&p.op);
    }

    let ops = parse_ddl(&dataset("demo-db/schema.cypher")).unwrap();
    assert_eq!(ops.len(), 4);
    assert_eq!(
        ops[0].text,
        "CREATE NODE TABLE User(name STRING, age INT64, PRIMARY KEY (name))"
    );
}

#[test]
fn parses_defaults_inline_keys_and_alter() {
    let script = r#"
        // a comment; with a semicolon
        CREATE NODE TABLE IF NOT EXISTS Product (
            id STRING PRIMARY KEY,
            stock INT64 DEFAULT 0,   -- trailing comment
            price DOUBLE DEFAULT 0,
            ratio FLOAT DEFAULT -1.5,
            name STRING DEFAULT 'it''s'
        );
    "#;
    // '' is not an escape in Cypher: two adjacent strings are an error.
    assert!(parse_ddl(script).is_err());

    let script = r#"
        /* block
           comment; */
        CREATE NODE TABLE IF NOT EXISTS Product (
            id STRING PRIMARY KEY,
            stock INT64 DEFAULT 0,   -- trailing comment
            price DOUBLE DEFAULT 0,
            ratio FLOAT DEFAULT -1.5,
            name STRING DEFAULT 'it\'s; "fine"',
            day DATE DEFAULT '2020-01-01',
            at TIMESTAMP DEFAULT timestamp('2020-01-01 10:00:00'),
            dur INTERVAL DEFAULT CAST('1 day' AS INTERVAL),
            tags STRING[] DEFAULT ['a', 'b'],
            pair STRUCT(x INT32, y STRING) DEFAULT {x: 1},
            amount DECIMAL(10, 2) DEFAULT 12.345,
            flag BOOLEAN DEFAULT TRUE,
            gone STRING DEFAULT NULL
        );;
        ALTER TABLE Product ADD IF NOT EXISTS weight DOUBLE DEFAULT 1;
        alter table Product add note STRING
    "#;
    let ops = parse_ddl(script).unwrap();
    assert_eq!(ops.len(), 3);
    assert!(ops[0].if_not_exists);
    let p = node(&ops[0].op);
    assert_eq!(p.primary_key, "id");
    let d = |n: &str| col(&p.columns, n).default.clone();
    assert_eq!(d("id"), None);
    assert_eq!(d("stock"), Some(Value::Int64(0)));
    assert_eq!(d("price"), Some(Value::Double(0.0)));
    assert_eq!(d("ratio"), Some(Value::Float(-1.5)));
    assert_eq!(d("name"), Some(Value::String("it's; \"fine\"".into())));
    assert_eq!(d("day"), Some(Value::Date(18262)));
    assert_eq!(d("at"), Some(Value::Timestamp(1_577_872_800_000_000)));
    assert_eq!(
        d("dur"),
        Some(Value::Interval {
            months: 0,
            days: 1,
            micros: 0
        })
    );
    assert_eq!(d("tags"), Some(Value::List(vec!["a".into(), "b".into()])));
    assert_eq!(
        d("pair"),
        Some(Value::Struct(vec![
            ("x".into(), Value::Int32(1)),
            ("y".into(), Value::Null)
        ]))
    );
    assert_eq!(
        d("amount"),
        Some(Value::Decimal {
            mantissa: 1235,
            scale: 2
        })
    );
    assert_eq!(d("flag"), Some(Value::Bool(true)));
    assert_eq!(d("gone"), None);
    round_trip(&ops[0].op);

    assert!(ops[1].if_not_exists);
    assert_eq!(
        ops[1].op,
        SchemaOp::AddColumn {
            table: "Product".into(),
            column: Column {
                name: "weight".into(),
                ty: DataType::Double,
                default: Some(Value::Double(1.0)),
            },
        }
    );
    assert!(!ops[2].if_not_exists);
    assert_eq!(ops[2].text, "alter table Product add note STRING");
    for p in &ops[1..] {
        let SchemaOp::AddColumn { table, column } = &p.op else {
            panic!()
        };
        let text = render_add_column(table, column);
        assert_eq!(parse_ddl(&text).unwrap()[0].op, p.op, "{text}");
    }
    assert_eq!(
        render_add_column("Product", col(&p.columns, "name")),
        "ALTER TABLE `Product` ADD `name` STRING DEFAULT 'it\\'s; \"fine\"'"
    );
}

#[test]
fn parses_multi_pair_rel_tables_and_keywords() {
    let script = "create node table A (k INT64, primary key (K));
        CREATE NODE TABLE `B c` (`we``ird` STRING, PRIMARY KEY (`we``ird`));
        Create Rel Table Links (From A To A, FROM A TO `B c`, w INT64 DEFAULT 5, ONE_many);
        CREATE REL TABLE GROUP Old (FROM A TO A, FROM `B c` TO A)";
    let ops = parse_ddl(script).unwrap();
    assert_eq!(node(&ops[0].op).primary_key, "k");
    let b = node(&ops[1].op);
    assert_eq!(b.name, "B c");
    assert_eq!(b.primary_key, "we`ird");
    let links = rel(&ops[2].op);
    assert_eq!(links.multiplicity, Multiplicity::OneMany);
    assert_eq!(
        links.connections,
        [("A".into(), "A".into()), ("A".into(), "B c".into())]
    );
    assert_eq!(links.columns[0].default, Some(Value::Int64(5)));
    let old = rel(&ops[3].op);
    assert_eq!(old.name, "Old");
    assert_eq!(old.connections.len(), 2);
    for p in &ops {
        round_trip(&p.op);
    }
    assert_eq!(
        render_table_ddl(&TableDef::Rel(links.clone())),
        "CREATE REL TABLE `Links` (FROM `A` TO `A`, FROM `A` TO `B c`, `_ks_eid` STRING, \
         `w` INT64 DEFAULT 5, ONE_MANY)"
    );
    assert_eq!(
        render_table_ddl(&TableDef::Node(b.clone())),
        "CREATE NODE TABLE `B c` (`we``ird` STRING, PRIMARY KEY (`we``ird`))"
    );
}

#[test]
fn parses_data_types() {
    let t = |s: &str| parse_data_type(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(t("int64"), DataType::Int64);
    assert_eq!(t("INT"), DataType::Int32);
    assert_eq!(t("integer"), DataType::Int32);
    assert_eq!(t("BigInt"), DataType::Int64);
    assert_eq!(t("real"), DataType::Float);
    assert_eq!(t("float8"), DataType::Double);
    assert_eq!(t("bytea"), DataType::Blob);
    assert_eq!(t("timestamp_s"), DataType::TimestampSec);
    assert_eq!(
        t("DECIMAL"),
        DataType::Decimal {
            precision: 18,
            scale: 3
        }
    );
    assert_eq!(
        t("decimal(10, 2)"),
        DataType::Decimal {
            precision: 10,
            scale: 2
        }
    );
    assert_eq!(
        t("DECIMAL(5)"),
        DataType::Decimal {
            precision: 5,
            scale: 0
        }
    );
    assert_eq!(
        t("INT64[][3]"),
        DataType::Array(Box::new(DataType::List(Box::new(DataType::Int64))), 3)
    );
    assert_eq!(
        t("MAP(STRING, STRUCT(a DATE[], b UNION(x INT8, y MAP(INT32, UUID))))[]").to_string(),
        "MAP(STRING, STRUCT(a DATE[], b UNION(x INT8, y MAP(INT32, UUID))))[]"
    );
    // Display output parses back to the same type.
    for s in [
        "BOOL",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "INT128",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FLOAT",
        "DOUBLE",
        "DECIMAL(38, 10)",
        "STRING",
        "BLOB",
        "UUID",
        "DATE",
        "TIMESTAMP",
        "TIMESTAMP_NS",
        "TIMESTAMP_MS",
        "TIMESTAMP_SEC",
        "TIMESTAMP_TZ",
        "INTERVAL",
        "STRUCT(a INT64, b STRING[])[2]",
    ] {
        assert_eq!(t(s).to_string(), s);
    }

    let e = parse_data_type("SERIAL").unwrap_err().to_string();
    assert!(e.contains("SERIAL") && e.contains("INT64"), "{e}");
    let e = parse_data_type("VARCHAR2").unwrap_err().to_string();
    assert!(e.contains("VARCHAR2"), "{e}");
    let e = parse_data_type("INT64[0]").unwrap_err().to_string();
    assert!(e.contains("at least 1"), "{e}");
    let e = parse_data_type("DECIMAL(40, 2)").unwrap_err().to_string();
    assert!(e.contains("DECIMAL(40, 2)"), "{e}");
    let e = parse_data_type("STRUCT(a INT64, A STRING)")
        .unwrap_err()
        .to_string();
    assert!(e.contains("twice"), "{e}");
    let e = parse_data_type("INT64 junk").unwrap_err().to_string();
    assert!(e.contains("junk"), "{e}");
    assert!(parse_data_type("MAP(STRING)").is_err());
    assert!(parse_data_type("").is_err());
}

#[test]
fn rejects_bad_ddl_naming_the_problem() {
    let e = parse_err("CREATE NODE TABLE T (id SERIAL, PRIMARY KEY (id))");
    assert!(e.contains("SERIAL keys cannot be replicated"), "{e}");

    let e = parse_err("CREATE NODE TABLE T (id INT64, name STRING)");
    assert!(e.contains("\"T\"") && e.contains("PRIMARY KEY"), "{e}");
    let e = parse_err("CREATE NODE TABLE T (id INT64, PRIMARY KEY (nope))");
    assert!(e.contains("nope"), "{e}");
    let e = parse_err("CREATE NODE TABLE T (id INT64 PRIMARY KEY, PRIMARY KEY (id))");
    assert!(e.contains("two primary keys"), "{e}");

    let e = parse_err("CREATE NODE TABLE T (id FOO, PRIMARY KEY (id))");
    assert!(e.contains("unknown data type `FOO`"), "{e}");
    let e = parse_err("CREATE NODE TABLE T (id INT64 PRIMARY KEY name STRING)");
    assert!(e.contains("`name`"), "{e}");
    let e = parse_err("CREATE NODE TABLE T (id INT64 DEFAULT 'x', PRIMARY KEY (id))");
    assert!(e.contains("T.id") && e.contains("\"x\""), "{e}");
    let e = parse_err("CREATE NODE TABLE T (id INT64 DEFAULT 1.5, PRIMARY KEY (id))");
    assert!(e.contains("1.5"), "{e}");
    let e = parse_err("CREATE NODE TABLE T (id STRING DEFAULT 5, PRIMARY KEY (id))");
    assert!(e.contains("quote it"), "{e}");
    let e = parse_err("CREATE NODE TABLE T (id INT64 DEFAULT now(), PRIMARY KEY (id))");
    assert!(e.contains("`now`"), "{e}");
    let e = parse_err("CREATE NODE TABLE T (id INT64, PRIMARY KEY (id)) WITH (x=1)");
    assert!(e.contains("`WITH`"), "{e}");

    let e = parse_err("CREATE REL TABLE R (x INT64)");
    assert!(e.contains("FROM") && e.contains("\"R\""), "{e}");
    let e = parse_err("CREATE REL TABLE R (FROM A TO B, MANY_MANY, ONE_ONE)");
    assert!(e.contains("two multiplicities"), "{e}");
    let e = parse_err("CREATE REL TABLE R (FROM A B)");
    assert!(e.contains("expected TO but found `B`"), "{e}");
    let e = parse_err("CREATE REL TABLE R (FROM A TO B, FROM a TO b)");
    assert!(e.contains("twice"), "{e}");

    for stmt in [
        "MATCH (n) RETURN n",
        "COPY person FROM \"vPerson.csv\"",
        "DROP TABLE person",
        "CREATE TABLE t AS SELECT 1",
        "ALTER TABLE person DROP age",
        "CREATE (n:person {ID: 1})",
    ] {
        let e = parse_err(&format!(
            "CREATE NODE TABLE A (k INT64, PRIMARY KEY (k)); {stmt};"
        ));
        assert!(
            e.contains("unsupported statement") && e.contains(&format!("{stmt:?}")),
            "{e}"
        );
    }
    let long = format!("MATCH (n) WHERE n.name = '{}' RETURN n", "x".repeat(100));
    let e = parse_err(&long);
    assert!(e.contains(&long[..60]) && !e.contains(&long[..61]), "{e}");

    let e = parse_err("CREATE NODE TABLE T (name STRING DEFAULT 'oops, PRIMARY KEY (name))");
    assert!(e.contains("unterminated string"), "{e}");
    let e = parse_err("/* never closed");
    assert!(e.contains("unterminated /*"), "{e}");
    assert!(parse_ddl("  ; ;; -- nothing\n").unwrap().is_empty());
}

#[test]
fn renders_literals_for_kuzu() {
    let ty = |s: &str| parse_data_type(s).unwrap();
    assert_eq!(render_literal(&Value::Int64(-5), &ty("INT64")), "-5");
    assert_eq!(render_literal(&Value::Double(0.0), &ty("DOUBLE")), "0.0");
    assert_eq!(render_literal(&Value::Bool(false), &ty("BOOL")), "false");
    assert_eq!(
        render_literal(&Value::String("a'b\\c\n".into()), &ty("STRING")),
        "'a\\'b\\\\c\\n'"
    );
    assert_eq!(
        render_literal(&Value::Date(0), &ty("DATE")),
        "CAST('1970-01-01' AS DATE)"
    );
    assert_eq!(
        render_literal(&Value::UInt64(u64::MAX), &ty("UINT64")),
        "CAST('18446744073709551615' AS UINT64)"
    );
    assert_eq!(
        render_literal(&Value::Double(f64::NAN), &ty("DOUBLE")),
        "CAST('NaN' AS DOUBLE)"
    );
    assert_eq!(
        render_literal(
            &Value::Decimal {
                mantissa: 150,
                scale: 2
            },
            &ty("DECIMAL(5, 2)")
        ),
        "CAST('1.50' AS DECIMAL(5, 2))"
    );
}

#[test]
fn every_type_of_default_round_trips() {
    use crate::text::{parse_interval, parse_timestamp_micros, parse_uuid};
    let cols: Vec<(&str, Value)> = vec![
        ("BOOL", Value::Bool(false)),
        ("INT8", Value::Int8(-128)),
        ("INT16", Value::Int16(7)),
        ("INT32", Value::Int32(i32::MIN)),
        ("INT64", Value::Int64(i64::MIN)),
        ("INT128", Value::Int128(i128::MIN)),
        ("UINT8", Value::UInt8(255)),
        ("UINT16", Value::UInt16(1)),
        ("UINT32", Value::UInt32(u32::MAX)),
        ("UINT64", Value::UInt64(u64::MAX)),
        ("FLOAT", Value::Float(0.1)),
        ("DOUBLE", Value::Double(-1e-300)),
        ("DOUBLE", Value::Double(f64::INFINITY)),
        (
            "DECIMAL(10, 4)",
            Value::Decimal {
                mantissa: -12345,
                scale: 4,
            },
        ),
        ("STRING", Value::String("multi\nline 'q' \\ \u{1}".into())),
        ("BLOB", Value::Blob(vec![0, 0x5c, b'a', 0xff])),
        (
            "UUID",
            Value::Uuid(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()),
        ),
        ("DATE", Value::Date(-1)),
        (
            "TIMESTAMP",
            Value::Timestamp(parse_timestamp_micros("2020-05-06 07:08:09.123456").unwrap()),
        ),
        ("TIMESTAMP_NS", Value::TimestampNs(-1)),
        ("TIMESTAMP_MS", Value::TimestampMs(1)),
        ("TIMESTAMP_SEC", Value::TimestampSec(12345)),
        ("TIMESTAMP_TZ", Value::TimestampTz(-5)),
        ("INTERVAL", {
            let (months, days, micros) = parse_interval("1 years 3 days 01:00:00.5").unwrap();
            Value::Interval {
                months,
                days,
                micros,
            }
        }),
        (
            "STRING[]",
            Value::List(vec!["a,b".into(), Value::Null, "".into(), "NULL".into()]),
        ),
        (
            "INT64[2]",
            Value::List(vec![Value::Int64(1), Value::Int64(-2)]),
        ),
        (
            "STRUCT(a DATE, b STRUCT(c STRING[], d BLOB))",
            Value::Struct(vec![
                ("a".into(), Value::Date(5)),
                (
                    "b".into(),
                    Value::Struct(vec![
                        ("c".into(), Value::List(vec!["x:y".into(), "{z}".into()])),
                        ("d".into(), Value::Blob(vec![1, 2])),
                    ]),
                ),
            ]),
        ),
        (
            "MAP(STRING, INT64[])",
            Value::Map(vec![
                ("k=1".into(), Value::List(vec![Value::Int64(1)])),
                ("k2".into(), Value::Null),
            ]),
        ),
        (
            "UNION(n INT64, s STRING)",
            Value::Union {
                tag: "s".into(),
                value: Box::new("text".into()),
            },
        ),
    ];
    let columns: Vec<Column> = cols
        .into_iter()
        .enumerate()
        .map(|(i, (ty, v))| Column {
            name: format!("c{i}"),
            ty: parse_data_type(ty).unwrap(),
            default: Some(v),
        })
        .collect();
    for c in &columns {
        let d = c.default.as_ref().unwrap();
        assert!(d.conforms_to(&c.ty), "{} {d:?}", c.ty);
    }
    let def = NodeTableDef {
        name: "Everything".into(),
        columns,
        primary_key: "c5".into(),
    };
    round_trip(&SchemaOp::CreateNodeTable(def));
    assert_eq!(
        render_schema_op(&SchemaOp::SetPolicy {
            table: "T".into(),
            column: "c".into(),
            policy: Policy::Counter
        }),
        None
    );
}
