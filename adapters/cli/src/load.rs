//! `kuzu-sync load`: turns the rows of the CSV files a Kuzu `COPY … FROM` script names into
//! replicated ops. Kuzu itself parses the files, with `LOAD WITH HEADERS (…) FROM … RETURN`,
//! which has exactly COPY's semantics (options, header auto-detection, nested literals), so
//! there is no second CSV or value parser here.
//!
//! Edges get the default edge key, except a repeated (table, from, to) within one load,
//! which gets `#2`, `#3`, …: duplicate rows stay distinct edges, as with COPY, and loading
//! the same script again changes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kuzu_sync_engine::{DataType, EdgeRef, NodeRef, Op, RelTableDef, TableDef, Value};
use kuzu_sync_kuzu::convert::{from_kuzu, read_expr};

use crate::{Error, KuzuReplica};

/// One `COPY table FROM "file" (options)` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStatement {
    pub table: String,
    /// The column list, if the statement names one (`COPY t (a, b) FROM …`, as Kuzu's
    /// `EXPORT DATABASE` writes): the file's columns in that order (for a rel table, after
    /// the FROM and TO keys).
    pub columns: Option<Vec<String>>,
    pub file: PathBuf,
    /// The option list as written, without parentheses (e.g. `HEADER=true, DELIM='|'`),
    /// minus `from` / `to`.
    pub options: String,
    /// For a rel table with several FROM/TO pairs: the pair this file holds (the `from`
    /// and `to` options).
    pub connection: Option<(String, String)>,
}

/// Splits `from='A', to='B'` off an option list.
fn take_connection(options: &str) -> (String, Option<(String, String)>) {
    let mut from = None;
    let mut to = None;
    let mut rest = Vec::new();
    for opt in options.split(',') {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        let v = v.trim().trim_matches(|c| c == '\'' || c == '"' || c == '`');
        match k.trim().to_ascii_lowercase().as_str() {
            "from" => from = Some(v.to_string()),
            "to" => to = Some(v.to_string()),
            _ if opt.trim().is_empty() => {}
            _ => rest.push(opt.trim().to_string()),
        }
    }
    (rest.join(", "), from.zip(to))
}

/// Parses a COPY script. Relative file paths resolve against `base` (the script's folder).
pub fn parse_copy_script(script: &str, base: &Path) -> Result<Vec<CopyStatement>, Error> {
    let mut out = Vec::new();
    for stmt in split_statements(script) {
        let s = stmt.trim();
        if s.is_empty() {
            continue;
        }
        let bad = || {
            Error::Invalid(format!(
                "not a `COPY table FROM \"file\" (options)` statement: {s}"
            ))
        };
        let rest = s
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("copy"))
            .map(|_| s[4..].trim_start())
            .ok_or_else(bad)?;
        let table_end = rest
            .find(|c: char| c.is_whitespace() || c == '(')
            .ok_or_else(bad)?;
        let table = rest[..table_end].trim_matches('`').to_string();
        let mut rest = rest[table_end..].trim_start();
        let mut columns = None;
        if let Some(list) = rest.strip_prefix('(') {
            let close = list.find(')').ok_or_else(bad)?;
            columns = Some(
                list[..close]
                    .split(',')
                    .map(|c| c.trim().trim_matches('`').to_string())
                    .filter(|c| !c.is_empty())
                    .collect(),
            );
            rest = list[close + 1..].trim_start();
        }
        let rest = rest
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("from"))
            .map(|_| rest[4..].trim_start())
            .ok_or_else(bad)?;
        let quote = rest
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(bad)?;
        let close = rest[1..].find(quote).ok_or_else(bad)? + 1;
        let file = &rest[1..close];
        let rest = rest[close + 1..].trim();
        let options = if rest.is_empty() {
            String::new()
        } else if rest.starts_with('(') && rest.ends_with(')') {
            rest[1..rest.len() - 1].trim().to_string()
        } else {
            return Err(bad());
        };
        let (options, connection) = take_connection(&options);
        let path = Path::new(file);
        out.push(CopyStatement {
            table,
            columns,
            connection,
            file: if path.is_absolute() {
                path.to_path_buf()
            } else {
                base.join(path)
            },
            options,
        });
    }
    Ok(out)
}

fn split_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for line in script.lines() {
        let trimmed = line.trim_start();
        if quote.is_none() && (trimmed.starts_with("//") || trimmed.starts_with("--")) {
            continue;
        }
        for ch in line.chars() {
            match quote {
                Some(q) if ch == q => quote = None,
                Some(_) => {}
                None if ch == '"' || ch == '\'' => quote = Some(ch),
                None if ch == ';' => {
                    out.push(std::mem::take(&mut cur));
                    continue;
                }
                None => {}
            }
            cur.push(ch);
        }
        cur.push('\n');
    }
    out.push(cur);
    out
}

/// What a load did, per COPY statement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedFile {
    pub table: String,
    pub file: String,
    pub rows: usize,
}

/// Progress of a load: rows read so far, and the file being read.
pub type LoadProgress<'a> = &'a mut dyn FnMut(&str, u64);

/// Loads every file of a COPY script into the replica, `batch` ops per atomic write.
pub fn load_script(
    replica: &mut KuzuReplica,
    script_path: &Path,
    batch: usize,
    progress: LoadProgress,
) -> Result<Vec<LoadedFile>, Error> {
    let script = std::fs::read_to_string(script_path).map_err(|e| Error::io(script_path, e))?;
    let base = script_path.parent().unwrap_or(Path::new("."));
    let statements = parse_copy_script(&script, base)?;
    let mut seen_edges: HashMap<(String, NodeRef, NodeRef), usize> = HashMap::new();
    let mut out = Vec::new();
    let mut done = 0u64;
    for stmt in &statements {
        let rows = read_rows(replica, stmt)?;
        let def = replica
            .engine()
            .schema()
            .table(&stmt.table)
            .cloned()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: table {} does not exist; run `kuzu-sync schema` first",
                    stmt.file.display(),
                    stmt.table
                ))
            })?;
        let n = rows.len();
        let pair = match &def {
            TableDef::Rel(r) => Some(connection(r, stmt)?),
            TableDef::Node(_) => None,
        };
        let mut ops = Vec::with_capacity(batch.min(n));
        for row in rows {
            ops.push(row_to_op(&def, row, pair.as_ref(), &mut seen_edges));
            if ops.len() >= batch {
                done += ops.len() as u64;
                replica.write(std::mem::take(&mut ops))?;
                progress(&stmt.table, done);
            }
        }
        done += ops.len() as u64;
        if !ops.is_empty() {
            replica.write(ops)?;
        }
        progress(&stmt.table, done);
        out.push(LoadedFile {
            table: def.name().to_string(),
            file: stmt.file.display().to_string(),
            rows: n,
        });
    }
    Ok(out)
}

/// The declared columns (name, type) of a COPY source for `def`: a node table's columns, or
/// a rel table's FROM key, TO key and properties.
fn source_columns(
    replica: &KuzuReplica,
    def: &TableDef,
    stmt: &CopyStatement,
) -> Result<Vec<DataType>, Error> {
    Ok(match def {
        TableDef::Node(t) => t.columns.iter().map(|c| c.ty.clone()).collect(),
        TableDef::Rel(r) => {
            let schema = replica.engine().schema();
            let (f, t) = connection(r, stmt)?;
            let pk = |name: &str| -> Result<DataType, Error> {
                let n = schema.node_table(name)?;
                Ok(n.key_column().expect("validated primary key").ty.clone())
            };
            let mut cols = vec![pk(&f)?, pk(&t)?];
            cols.extend(r.columns.iter().map(|c| c.ty.clone()));
            cols
        }
    })
}

fn read_rows(replica: &mut KuzuReplica, stmt: &CopyStatement) -> Result<Vec<Vec<Value>>, Error> {
    let def = replica
        .engine()
        .schema()
        .table(&stmt.table)
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("table {} does not exist", stmt.table)))?;
    let table_types = source_columns(replica, &def, stmt)?;
    // With a column list, the file's columns are those, in that order (after FROM and TO
    // for a rel table); `order[i]` is the table position of file column i.
    let fixed = match def {
        TableDef::Node(_) => 0,
        TableDef::Rel(_) => 2,
    };
    let order: Vec<usize> = match &stmt.columns {
        None => (0..table_types.len()).collect(),
        Some(names) => {
            let props = def.columns();
            let mut order: Vec<usize> = (0..fixed).collect();
            for n in names {
                let i = props
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(n))
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "{}: table {} has no column {n}",
                            stmt.file.display(),
                            def.name()
                        ))
                    })?;
                order.push(fixed + i);
            }
            order
        }
    };
    let types: Vec<DataType> = order.iter().map(|&i| table_types[i].clone()).collect();
    let decl: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("c{i} {t}"))
        .collect();
    let ret: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| read_expr(&format!("c{i}"), t))
        .collect();
    let file = stmt
        .file
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let opts = if stmt.options.is_empty() {
        String::new()
    } else {
        format!(" ({})", stmt.options)
    };
    let q = format!(
        "LOAD WITH HEADERS ({}) FROM \"{file}\"{opts} RETURN {}",
        decl.join(", "),
        ret.join(", ")
    );
    if !stmt.file.exists() {
        return Err(Error::io(
            &stmt.file,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "file named by the COPY script",
            ),
        ));
    }
    let (_, rows) = replica.graph().query(&q)?;
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut out = vec![Value::Null; table_types.len()];
            for ((v, t), &at) in row.into_iter().zip(&types).zip(&order) {
                out[at] = from_kuzu(v, t).map_err(|e| {
                    Error::Invalid(format!("{} row {}: {e}", stmt.file.display(), i + 1))
                })?;
            }
            Ok(out)
        })
        .collect()
}

/// The FROM/TO pair a COPY of rel table `r` loads: the one its `from`/`to` options name,
/// or the table's only pair.
fn connection(r: &RelTableDef, stmt: &CopyStatement) -> Result<(String, String), Error> {
    match &stmt.connection {
        Some((f, t)) => r
            .connections
            .iter()
            .find(|(a, b)| a.eq_ignore_ascii_case(f) && b.eq_ignore_ascii_case(t))
            .cloned()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: rel table {} has no FROM {f} TO {t} pair",
                    stmt.file.display(),
                    r.name
                ))
            }),
        None if r.connections.len() == 1 => Ok(r.connections[0].clone()),
        None => Err(Error::Invalid(format!(
            "{}: rel table {} has several FROM/TO pairs: give the pair with the options \
             (from='A', to='B')",
            stmt.file.display(),
            r.name
        ))),
    }
}

fn row_to_op(
    def: &TableDef,
    row: Vec<Value>,
    pair: Option<&(String, String)>,
    seen: &mut HashMap<(String, NodeRef, NodeRef), usize>,
) -> Op {
    match def {
        TableDef::Node(t) => Op::AddNode {
            table: t.name.clone(),
            props: t
                .columns
                .iter()
                .zip(row)
                .map(|(c, v)| (c.name.clone(), v))
                .collect(),
        },
        TableDef::Rel(r) => {
            let (f, t) = pair.unwrap_or(&r.connections[0]);
            let mut it = row.into_iter();
            let from = NodeRef {
                table: f.clone(),
                key: it.next().unwrap_or(Value::Null),
            };
            let to = NodeRef {
                table: t.clone(),
                key: it.next().unwrap_or(Value::Null),
            };
            let n = seen
                .entry((r.name.to_ascii_lowercase(), from.clone(), to.clone()))
                .or_insert(0);
            *n += 1;
            let key = if *n == 1 {
                String::new()
            } else {
                format!("#{n}")
            };
            Op::AddEdge {
                edge: EdgeRef {
                    table: r.name.clone(),
                    from,
                    to,
                    key,
                },
                props: r.columns.iter().map(|c| c.name.clone()).zip(it).collect(),
            }
        }
    }
}
