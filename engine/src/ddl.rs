//! A parser for the subset of Cypher DDL that kuzu-sync replicates (`CREATE NODE TABLE`,
//! `CREATE REL TABLE`, `ALTER TABLE … ADD`) and the inverse renderer that produces the DDL to
//! run in Kuzu.
//!
//! Type names follow Kuzu's own parser: `INT` is INT32 (as in Kuzu), `INTEGER` likewise,
//! `BIGINT` is INT64, `REAL`/`FLOAT4` are FLOAT, `FLOAT8` is DOUBLE, `BYTEA` is BLOB,
//! `TIMESTAMP_S` is TIMESTAMP_SEC and `DURATION` is INTERVAL. `SERIAL` is refused: serial keys
//! are assigned by each replica and cannot be replicated.

use crate::error::EngineError;
use crate::schema::{
    Column, Multiplicity, NodeTableDef, RelTableDef, SchemaOp, TableDef, EDGE_KEY_COLUMN,
};
use crate::text;
use crate::value::{DataType, Value};

/// One parsed DDL statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedDdl {
    pub op: SchemaOp,
    /// The statement said `IF NOT EXISTS`: the caller should skip it, not fail, when the table
    /// (or column) already exists.
    pub if_not_exists: bool,
    /// The statement's source text, without the terminating `;`.
    pub text: String,
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// Parses a Kuzu type name such as `INT64`, `STRING[]`, `DECIMAL(10, 2)`,
/// `STRUCT(a INT32, b MAP(STRING, DATE[]))` or `UNION(x FLOAT, y STRING)[3]`, case-insensitively.
pub fn parse_data_type(s: &str) -> Result<DataType, EngineError> {
    let toks = lex(s).map_err(|reason| EngineError::Parse {
        what: "data type".into(),
        reason,
    })?;
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        text: s,
        what: "data type",
    };
    let ty = p.data_type()?;
    if p.pos < toks.len() {
        return Err(p.err(&format!(
            "unexpected {} after the type",
            p.describe_current()
        )));
    }
    Ok(ty)
}

/// Parses a script of DDL statements separated by `;`. Blank statements and `//`, `--` and
/// `/* */` comments are skipped. Any statement other than `CREATE NODE TABLE`,
/// `CREATE REL TABLE` (or `CREATE REL TABLE GROUP`) and `ALTER TABLE … ADD` is an error naming
/// it.
pub fn parse_ddl(script: &str) -> Result<Vec<ParsedDdl>, EngineError> {
    let toks = lex(script).map_err(|reason| EngineError::Parse {
        what: "DDL".into(),
        reason,
    })?;
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for i in 0..=toks.len() {
        let end_here = match toks.get(i).map(|t| &t.tok) {
            None => true,
            Some(Tok::Sym('(')) => {
                depth += 1;
                false
            }
            Some(Tok::Sym(')')) => {
                depth -= 1;
                false
            }
            Some(Tok::Sym(';')) => depth <= 0,
            _ => false,
        };
        if end_here {
            let stmt = &toks[start..i];
            if !stmt.is_empty() {
                let text = &script[stmt[0].start..stmt[stmt.len() - 1].end];
                out.push(parse_statement(stmt, text)?);
            }
            start = i + 1;
            depth = 0;
        }
    }
    Ok(out)
}

/// The DDL that creates `def` in Kuzu. Identifiers are backtick-quoted; a rel table gets the
/// hidden edge-key column [`EDGE_KEY_COLUMN`] (`STRING`) as its first property.
pub fn render_table_ddl(def: &TableDef) -> String {
    render_create(def, true)
}

/// `ALTER TABLE `t` ADD `c` TYPE [DEFAULT …]`.
pub fn render_add_column(table: &str, column: &Column) -> String {
    format!(
        "ALTER TABLE {} ADD {}",
        quote_ident(table),
        render_column(column)
    )
}

/// The user-level DDL of a schema op, which [`parse_ddl`] reads back to the same op (rel
/// tables without the hidden edge-key column). `None` for [`SchemaOp::SetPolicy`] and
/// [`SchemaOp::SetConstraint`], which have no DDL form.
pub fn render_schema_op(op: &SchemaOp) -> Option<String> {
    match op {
        SchemaOp::CreateNodeTable(n) => Some(render_create(&TableDef::Node(n.clone()), false)),
        SchemaOp::CreateRelTable(r) => Some(render_create(&TableDef::Rel(r.clone()), false)),
        SchemaOp::AddColumn { table, column } => Some(render_add_column(table, column)),
        SchemaOp::SetPolicy { .. } | SchemaOp::SetConstraint { .. } => None,
    }
}

/// A backtick-quoted identifier (backticks inside are doubled).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A Cypher string literal in single quotes, with `\`-escapes for the quote, the backslash
/// and control characters.
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A Kuzu literal expression for a value of column type `ty`: numbers and booleans plain,
/// strings quoted, and everything else as `CAST('<text>' AS <type>)`.
pub fn render_literal(v: &Value, ty: &DataType) -> String {
    let cast = |text: String| format!("CAST({} AS {ty})", quote_string(&text));
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int8(_)
        | Value::Int16(_)
        | Value::Int32(_)
        | Value::Int64(_)
        | Value::UInt8(_)
        | Value::UInt16(_)
        | Value::UInt32(_) => text::render(v),
        Value::Int128(x) if i64::try_from(*x).is_ok() => x.to_string(),
        Value::UInt64(x) if i64::try_from(*x).is_ok() => x.to_string(),
        Value::Float(x) if x.is_finite() => format!("{x:?}"),
        Value::Double(x) if x.is_finite() => format!("{x:?}"),
        Value::String(s) => quote_string(s),
        other => cast(text::render_quoted(other)),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn render_column(c: &Column) -> String {
    let mut s = format!("{} {}", quote_ident(&c.name), c.ty);
    if let Some(d) = &c.default {
        s.push_str(" DEFAULT ");
        s.push_str(&render_literal(d, &c.ty));
    }
    s
}

fn render_create(def: &TableDef, with_edge_key: bool) -> String {
    match def {
        TableDef::Node(n) => {
            let mut parts: Vec<String> = n.columns.iter().map(render_column).collect();
            parts.push(format!("PRIMARY KEY ({})", quote_ident(&n.primary_key)));
            format!(
                "CREATE NODE TABLE {} ({})",
                quote_ident(&n.name),
                parts.join(", ")
            )
        }
        TableDef::Rel(r) => {
            let mut parts: Vec<String> = r
                .connections
                .iter()
                .map(|(f, t)| format!("FROM {} TO {}", quote_ident(f), quote_ident(t)))
                .collect();
            if with_edge_key {
                parts.push(format!("{} STRING", quote_ident(EDGE_KEY_COLUMN)));
            }
            parts.extend(r.columns.iter().map(render_column));
            parts.push(r.multiplicity.keyword().to_string());
            format!(
                "CREATE REL TABLE {} ({})",
                quote_ident(&r.name),
                parts.join(", ")
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A bare word: keyword, identifier or type name.
    Word(String),
    /// A backtick-quoted identifier.
    Quoted(String),
    /// A string literal, escapes decoded.
    Str(String),
    /// An unsigned number literal, as written.
    Num(String),
    Sym(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset = |i: usize| chars.get(i).map_or(src.len(), |&(o, _)| o);
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let start = i;
        let tok = if c.is_whitespace() {
            i += 1;
            continue;
        } else if (c == '/' && at(i + 1) == Some('/')) || (c == '-' && at(i + 1) == Some('-')) {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
            continue;
        } else if c == '/' && at(i + 1) == Some('*') {
            i += 2;
            loop {
                match at(i) {
                    None => {
                        return Err(format!(
                            "unterminated /* comment starting at {:?}",
                            snippet(&src[offset(start)..])
                        ))
                    }
                    Some('*') if at(i + 1) == Some('/') => {
                        i += 2;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            continue;
        } else if c.is_alphabetic() || c == '_' {
            while at(i).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                i += 1;
            }
            Tok::Word(src[offset(start)..offset(i)].to_string())
        } else if c.is_ascii_digit() {
            while at(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
            if at(i) == Some('.') && at(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
                while at(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
            }
            if matches!(at(i), Some('e' | 'E')) {
                let sign = usize::from(matches!(at(i + 1), Some('+' | '-')));
                if at(i + 1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1 + sign;
                    while at(i).is_some_and(|c| c.is_ascii_digit()) {
                        i += 1;
                    }
                }
            }
            Tok::Num(src[offset(start)..offset(i)].to_string())
        } else if c == '`' {
            let mut name = String::new();
            i += 1;
            loop {
                match at(i) {
                    None => {
                        return Err(format!(
                            "unterminated `quoted identifier` at {:?}",
                            snippet(&src[offset(start)..])
                        ))
                    }
                    Some('`') if at(i + 1) == Some('`') => {
                        name.push('`');
                        i += 2;
                    }
                    Some('`') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        name.push(c);
                        i += 1;
                    }
                }
            }
            Tok::Quoted(name)
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match at(i) {
                    None => {
                        return Err(format!(
                            "unterminated string literal at {:?}",
                            snippet(&src[offset(start)..])
                        ))
                    }
                    Some('\\') => {
                        let (decoded, used) = unescape(&chars, i + 1).ok_or_else(|| {
                            format!(
                                "invalid escape in string literal at {:?}",
                                snippet(&src[offset(i)..])
                            )
                        })?;
                        s.push(decoded);
                        i += 1 + used;
                    }
                    Some(q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        s.push(other);
                        i += 1;
                    }
                }
            }
            Tok::Str(s)
        } else {
            i += 1;
            Tok::Sym(c)
        };
        toks.push(Token {
            tok,
            start: offset(start),
            end: offset(i),
        });
    }
    Ok(toks)
}

/// Decodes the escape after a backslash at `chars[i..]`: the character and how many chars it
/// used.
fn unescape(chars: &[(usize, char)], i: usize) -> Option<(char, usize)> {
    let c = chars.get(i)?.1;
    let simple = match c {
        '\\' => Some('\\'),
        '\'' => Some('\''),
        '"' => Some('"'),
        'b' | 'B' => Some('\u{8}'),
        'f' | 'F' => Some('\u{c}'),
        'n' | 'N' => Some('\n'),
        'r' | 'R' => Some('\r'),
        't' | 'T' => Some('\t'),
        _ => None,
    };
    if let Some(d) = simple {
        return Some((d, 1));
    }
    let len = match c {
        'u' => 4,
        'U' => 8,
        _ => return None,
    };
    let hex: String = chars
        .get(i + 1..i + 1 + len)?
        .iter()
        .map(|&(_, c)| c)
        .collect();
    let code = u32::from_str_radix(&hex, 16).ok()?;
    Some((char::from_u32(code)?, 1 + len))
}

/// The first 60 characters of `s`, for error messages.
fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if s.chars().nth(60).is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

/// A literal in a DEFAULT clause, before it is converted to the column's type.
#[derive(Clone, Debug)]
enum Lit {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    List(Vec<Lit>),
    Struct(Vec<(String, Lit)>),
    Cast(Box<Lit>),
}

struct Parser<'a> {
    toks: &'a [Token],
    pos: usize,
    /// The statement's text, for error messages.
    text: &'a str,
    what: &'static str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k).map(|t| &t.tok)
    }

    fn is_kw_at(&self, k: usize, kw: &str) -> bool {
        matches!(self.peek_at(k), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.is_kw_at(0, kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), EngineError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.err(&format!(
                "expected {kw} but found {}",
                self.describe_current()
            )))
        }
    }

    fn eat_sym(&mut self, c: char) -> bool {
        let yes = self.peek() == Some(&Tok::Sym(c));
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_sym(&mut self, c: char) -> Result<(), EngineError> {
        if self.eat_sym(c) {
            Ok(())
        } else {
            Err(self.err(&format!(
                "expected '{c}' but found {}",
                self.describe_current()
            )))
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, EngineError> {
        match self.peek() {
            Some(Tok::Word(w) | Tok::Quoted(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => Err(self.err(&format!(
                "expected {what} but found {}",
                self.describe_current()
            ))),
        }
    }

    fn describe_current(&self) -> String {
        match self.peek() {
            None => "the end of the statement".into(),
            Some(Tok::Word(w)) => format!("`{w}`"),
            Some(Tok::Quoted(w)) => format!("`{w}`"),
            Some(Tok::Str(s)) => format!("string {s:?}"),
            Some(Tok::Num(n)) => format!("`{n}`"),
            Some(Tok::Sym(c)) => format!("`{c}`"),
        }
    }

    fn err(&self, reason: &str) -> EngineError {
        EngineError::Parse {
            what: self.what.into(),
            reason: format!("{reason} in {:?}", snippet(self.text)),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn expect_end(&self) -> Result<(), EngineError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.err(&format!(
                "unexpected {} after the statement",
                self.describe_current()
            )))
        }
    }

    // --- types ---

    fn data_type(&mut self) -> Result<DataType, EngineError> {
        let name = match self.peek() {
            Some(Tok::Word(w)) => w.clone(),
            _ => {
                return Err(self.err(&format!(
                    "expected a data type but found {}",
                    self.describe_current()
                )))
            }
        };
        self.pos += 1;
        let mut ty =
            match name.to_ascii_uppercase().as_str() {
                "BOOL" | "BOOLEAN" => DataType::Bool,
                "INT8" => DataType::Int8,
                "INT16" => DataType::Int16,
                "INT32" | "INT" | "INTEGER" => DataType::Int32,
                "INT64" | "BIGINT" => DataType::Int64,
                "INT128" => DataType::Int128,
                "UINT8" => DataType::UInt8,
                "UINT16" => DataType::UInt16,
                "UINT32" => DataType::UInt32,
                "UINT64" => DataType::UInt64,
                "FLOAT" | "FLOAT4" | "REAL" => DataType::Float,
                "DOUBLE" | "FLOAT8" => DataType::Double,
                "STRING" => DataType::String,
                "BLOB" | "BYTEA" => DataType::Blob,
                "UUID" => DataType::Uuid,
                "DATE" => DataType::Date,
                "TIMESTAMP" => DataType::Timestamp,
                "TIMESTAMP_NS" => DataType::TimestampNs,
                "TIMESTAMP_MS" => DataType::TimestampMs,
                "TIMESTAMP_SEC" | "TIMESTAMP_S" => DataType::TimestampSec,
                "TIMESTAMP_TZ" => DataType::TimestampTz,
                "INTERVAL" | "DURATION" => DataType::Interval,
                "SERIAL" => return Err(self.err(
                    "SERIAL keys cannot be replicated: every replica would assign its own ids; \
                     use an INT64 or STRING key and assign the ids yourself",
                )),
                "DECIMAL" | "NUMERIC" => {
                    let (precision, scale) = if self.eat_sym('(') {
                        let p = self.small_number("the DECIMAL precision")?;
                        let s = if self.eat_sym(',') {
                            self.small_number("the DECIMAL scale")?
                        } else {
                            0
                        };
                        self.expect_sym(')')?;
                        (p, s)
                    } else {
                        (18, 3)
                    };
                    if !(1..=38).contains(&precision) || scale > precision {
                        return Err(self.err(&format!(
                            "DECIMAL({precision}, {scale}) is invalid: the precision must be 1-38 \
                         and the scale at most the precision"
                        )));
                    }
                    DataType::Decimal {
                        precision: precision as u8,
                        scale: scale as u8,
                    }
                }
                "STRUCT" => DataType::Struct(self.field_list("STRUCT")?),
                "UNION" => DataType::Union(self.field_list("UNION")?),
                "MAP" => {
                    self.expect_sym('(')?;
                    let k = self.data_type()?;
                    self.expect_sym(',')?;
                    let v = self.data_type()?;
                    self.expect_sym(')')?;
                    DataType::Map(Box::new(k), Box::new(v))
                }
                _ => return Err(self.err(&format!("unknown data type `{name}`"))),
            };
        while self.eat_sym('[') {
            if self.eat_sym(']') {
                ty = DataType::List(Box::new(ty));
            } else {
                let n = self.small_number("the array length")?;
                if n == 0 {
                    return Err(self.err("an array length must be at least 1"));
                }
                self.expect_sym(']')?;
                ty = DataType::Array(Box::new(ty), n);
            }
        }
        Ok(ty)
    }

    fn small_number(&mut self, what: &str) -> Result<u32, EngineError> {
        match self.peek() {
            Some(Tok::Num(n)) => {
                let v = n
                    .parse::<u32>()
                    .map_err(|_| self.err(&format!("{what} `{n}` is not a valid number")))?;
                self.pos += 1;
                Ok(v)
            }
            _ => Err(self.err(&format!(
                "expected {what} but found {}",
                self.describe_current()
            ))),
        }
    }

    fn field_list(&mut self, kind: &str) -> Result<Vec<(String, DataType)>, EngineError> {
        self.expect_sym('(')?;
        let mut fields: Vec<(String, DataType)> = Vec::new();
        loop {
            let name = self.ident(&format!("a {kind} field name"))?;
            if fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                return Err(self.err(&format!("{kind} field {name} is declared twice")));
            }
            let ty = self.data_type()?;
            fields.push((name, ty));
            if !self.eat_sym(',') {
                break;
            }
        }
        self.expect_sym(')')?;
        Ok(fields)
    }

    // --- literals ---

    fn literal(&mut self) -> Result<Lit, EngineError> {
        let bad = |p: &Self| {
            p.err(&format!(
                "expected a literal (number, 'string', true, false, NULL, [list], {{struct}} or \
                 CAST(... AS type)) but found {}",
                p.describe_current()
            ))
        };
        let lit = match self.peek().cloned() {
            Some(Tok::Sym(sign @ ('-' | '+'))) => match self.peek_at(1) {
                Some(Tok::Num(n)) => {
                    let n = n.clone();
                    self.pos += 2;
                    Lit::Num(if sign == '-' { format!("-{n}") } else { n })
                }
                _ => return Err(bad(self)),
            },
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Lit::Num(n)
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Lit::Str(s)
            }
            Some(Tok::Sym('[')) => {
                self.pos += 1;
                let mut items = Vec::new();
                if !self.eat_sym(']') {
                    loop {
                        items.push(self.literal()?);
                        if !self.eat_sym(',') {
                            break;
                        }
                    }
                    self.expect_sym(']')?;
                }
                Lit::List(items)
            }
            Some(Tok::Sym('{')) => {
                self.pos += 1;
                let mut fields = Vec::new();
                if !self.eat_sym('}') {
                    loop {
                        let name = match self.peek() {
                            Some(Tok::Word(w) | Tok::Quoted(w) | Tok::Str(w)) => w.clone(),
                            _ => {
                                return Err(self.err(&format!(
                                    "expected a struct field name but found {}",
                                    self.describe_current()
                                )))
                            }
                        };
                        self.pos += 1;
                        self.expect_sym(':')?;
                        fields.push((name, self.literal()?));
                        if !self.eat_sym(',') {
                            break;
                        }
                    }
                    self.expect_sym('}')?;
                }
                Lit::Struct(fields)
            }
            Some(Tok::Word(w)) => match w.to_ascii_uppercase().as_str() {
                "NULL" => {
                    self.pos += 1;
                    Lit::Null
                }
                "TRUE" | "FALSE" => {
                    self.pos += 1;
                    Lit::Bool(w.eq_ignore_ascii_case("true"))
                }
                "CAST" if self.peek_at(1) == Some(&Tok::Sym('(')) => {
                    self.pos += 2;
                    let inner = self.literal()?;
                    self.expect_kw("AS")?;
                    self.data_type()?;
                    self.expect_sym(')')?;
                    Lit::Cast(Box::new(inner))
                }
                // Constructor functions such as date('2020-01-01') or interval('1 day').
                _ if self.peek_at(1) == Some(&Tok::Sym('('))
                    && matches!(self.peek_at(2), Some(Tok::Str(_)))
                    && self.peek_at(3) == Some(&Tok::Sym(')'))
                    && parse_data_type(&w).is_ok() =>
                {
                    let Some(Tok::Str(s)) = self.peek_at(2).cloned() else {
                        unreachable!("checked above")
                    };
                    self.pos += 4;
                    Lit::Cast(Box::new(Lit::Str(s)))
                }
                _ => return Err(bad(self)),
            },
            _ => return Err(bad(self)),
        };
        Ok(lit)
    }

    // --- statements ---

    fn if_not_exists(&mut self) -> Result<bool, EngineError> {
        if self.eat_kw("IF") {
            self.expect_kw("NOT")?;
            self.expect_kw("EXISTS")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// `name TYPE [DEFAULT literal] [PRIMARY KEY]`; returns the column and whether it was
    /// declared the primary key.
    fn column_def(&mut self, table: &str) -> Result<(Column, bool), EngineError> {
        let name = self.ident("a column name")?;
        let ty = self.data_type()?;
        let mut default = None;
        let mut pk = false;
        loop {
            if self.eat_kw("DEFAULT") {
                let lit = self.literal()?;
                default = lit_value(&lit, &ty).map_err(|e| {
                    self.err(&format!(
                        "DEFAULT of column {table}.{name} is not a valid {ty}: {e}"
                    ))
                })?;
            } else if self.is_kw("PRIMARY") && self.is_kw_at(1, "KEY") {
                self.pos += 2;
                pk = true;
            } else {
                break;
            }
        }
        Ok((Column { name, ty, default }, pk))
    }

    fn unsupported(&self) -> EngineError {
        EngineError::Parse {
            what: "DDL".into(),
            reason: format!(
                "unsupported statement {:?}: only CREATE NODE TABLE, CREATE REL TABLE and \
                 ALTER TABLE … ADD are replicated",
                snippet(self.text)
            ),
        }
    }

    fn statement(&mut self) -> Result<(SchemaOp, bool), EngineError> {
        if self.is_kw("CREATE") && self.is_kw_at(1, "NODE") && self.is_kw_at(2, "TABLE") {
            self.pos += 3;
            let ine = self.if_not_exists()?;
            let name = self.ident("a table name")?;
            Ok((self.node_table(name)?, ine))
        } else if self.is_kw("CREATE") && self.is_kw_at(1, "REL") && self.is_kw_at(2, "TABLE") {
            self.pos += 3;
            // Older Kuzu spelled multi-pair rel tables `CREATE REL TABLE GROUP`.
            if self.is_kw("GROUP") && !matches!(self.peek_at(1), Some(Tok::Sym('('))) {
                self.pos += 1;
            }
            let ine = self.if_not_exists()?;
            let name = self.ident("a table name")?;
            Ok((self.rel_table(name)?, ine))
        } else if self.is_kw("ALTER") && self.is_kw_at(1, "TABLE") {
            self.pos += 2;
            let table = self.ident("a table name")?;
            if !self.eat_kw("ADD") {
                return Err(self.unsupported());
            }
            let ine = self.if_not_exists()?;
            let (column, pk) = self.column_def(&table)?;
            if pk {
                return Err(self.err("ALTER TABLE … ADD cannot add a primary key"));
            }
            self.expect_end()?;
            Ok((SchemaOp::AddColumn { table, column }, ine))
        } else {
            Err(self.unsupported())
        }
    }

    fn node_table(&mut self, name: String) -> Result<SchemaOp, EngineError> {
        self.expect_sym('(')?;
        let mut columns: Vec<Column> = Vec::new();
        let mut pk: Option<String> = None;
        let set_pk = |p: &Self, col: String, pk: &mut Option<String>| {
            if let Some(old) = pk {
                return Err(p.err(&format!(
                    "table {name} declares two primary keys ({old} and {col})"
                )));
            }
            *pk = Some(col);
            Ok(())
        };
        loop {
            if self.is_kw("PRIMARY") && self.is_kw_at(1, "KEY") {
                self.pos += 2;
                self.expect_sym('(')?;
                let col = self.ident("the primary key column")?;
                self.expect_sym(')')?;
                set_pk(self, col, &mut pk)?;
            } else {
                let (col, is_pk) = self.column_def(&name)?;
                if is_pk {
                    set_pk(self, col.name.clone(), &mut pk)?;
                }
                columns.push(col);
            }
            if !self.eat_sym(',') {
                break;
            }
        }
        self.expect_sym(')')?;
        self.expect_end()?;
        let pk = pk.ok_or_else(|| EngineError::InvalidSchema {
            table: name.clone(),
            reason: "no PRIMARY KEY: declare `PRIMARY KEY (column)`".into(),
        })?;
        let primary_key = columns
            .iter()
            .find(|c| c.name == pk)
            .or_else(|| columns.iter().find(|c| c.name.eq_ignore_ascii_case(&pk)))
            .map(|c| c.name.clone())
            .ok_or_else(|| EngineError::InvalidSchema {
                table: name.clone(),
                reason: format!("primary key {pk} is not a column"),
            })?;
        Ok(SchemaOp::CreateNodeTable(NodeTableDef {
            name,
            columns,
            primary_key,
        }))
    }

    fn rel_table(&mut self, name: String) -> Result<SchemaOp, EngineError> {
        self.expect_sym('(')?;
        let mut connections: Vec<(String, String)> = Vec::new();
        let mut columns: Vec<Column> = Vec::new();
        let mut multiplicity: Option<Multiplicity> = None;
        loop {
            let mult = match self.peek() {
                Some(Tok::Word(w)) if matches!(self.peek_at(1), Some(Tok::Sym(',' | ')'))) => {
                    match w.to_ascii_uppercase().as_str() {
                        "MANY_MANY" => Some(Multiplicity::ManyMany),
                        "MANY_ONE" => Some(Multiplicity::ManyOne),
                        "ONE_MANY" => Some(Multiplicity::OneMany),
                        "ONE_ONE" => Some(Multiplicity::OneOne),
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(m) = mult {
                if multiplicity.is_some() {
                    return Err(self.err(&format!("rel table {name} declares two multiplicities")));
                }
                self.pos += 1;
                multiplicity = Some(m);
            } else if self.is_kw("FROM") {
                self.pos += 1;
                let from = self.ident("the FROM table")?;
                self.expect_kw("TO")?;
                let to = self.ident("the TO table")?;
                if connections
                    .iter()
                    .any(|(f, t)| f.eq_ignore_ascii_case(&from) && t.eq_ignore_ascii_case(&to))
                {
                    return Err(self.err(&format!("FROM {from} TO {to} appears twice")));
                }
                connections.push((from, to));
            } else {
                let (col, pk) = self.column_def(&name)?;
                if pk {
                    return Err(self.err(&format!(
                        "rel table {name} cannot have a primary key ({})",
                        col.name
                    )));
                }
                columns.push(col);
            }
            if !self.eat_sym(',') {
                break;
            }
        }
        self.expect_sym(')')?;
        self.expect_end()?;
        if connections.is_empty() {
            return Err(EngineError::InvalidSchema {
                table: name,
                reason: "a rel table needs at least one FROM … TO … pair".into(),
            });
        }
        Ok(SchemaOp::CreateRelTable(RelTableDef {
            name,
            connections,
            columns,
            multiplicity: multiplicity.unwrap_or(Multiplicity::ManyMany),
        }))
    }
}

fn parse_statement(toks: &[Token], text: &str) -> Result<ParsedDdl, EngineError> {
    let mut p = Parser {
        toks,
        pos: 0,
        text,
        what: "DDL",
    };
    let (op, if_not_exists) = p.statement()?;
    Ok(ParsedDdl {
        op,
        if_not_exists,
        text: text.to_string(),
    })
}

/// Converts a DEFAULT literal to a value of the column type (NULL stays NULL).
fn lit_value(lit: &Lit, ty: &DataType) -> Result<Option<Value>, String> {
    fn convert(lit: &Lit, ty: &DataType) -> Result<Value, String> {
        match (lit, ty) {
            (Lit::Null, _) => Ok(Value::Null),
            (Lit::Bool(b), DataType::Bool) => Ok(Value::Bool(*b)),
            (Lit::Bool(b), _) => Err(format!("{b} is not a {ty}")),
            (Lit::Num(n), DataType::String) => {
                Err(format!("{n} is a number, not a STRING (quote it)"))
            }
            (Lit::Num(n), t) if t.is_numeric() || matches!(t, DataType::Decimal { .. }) => {
                text::parse_value(n, t)
            }
            (Lit::Num(n), _) => Err(format!("{n} is not a {ty}")),
            (Lit::Str(s), DataType::String) => Ok(Value::String(s.clone())),
            (Lit::Str(s), t) => text::parse_value(s, t),
            (Lit::Cast(inner), t) => convert(inner, t),
            (Lit::List(items), DataType::List(t)) => items
                .iter()
                .map(|i| convert(i, t))
                .collect::<Result<_, _>>()
                .map(Value::List),
            (Lit::List(items), DataType::Array(t, n)) => {
                if items.len() != *n as usize {
                    return Err(format!("{} elements, {ty} needs {n}", items.len()));
                }
                items
                    .iter()
                    .map(|i| convert(i, t))
                    .collect::<Result<_, _>>()
                    .map(Value::List)
            }
            (Lit::List(_), _) => Err(format!("a list is not a {ty}")),
            (Lit::Struct(given), DataType::Struct(fields)) => {
                for (g, _) in given {
                    if !fields.iter().any(|(f, _)| f.eq_ignore_ascii_case(g)) {
                        return Err(format!("{ty} has no field {g}"));
                    }
                }
                fields
                    .iter()
                    .map(|(f, t)| {
                        let v = match given.iter().find(|(g, _)| g.eq_ignore_ascii_case(f)) {
                            Some((_, l)) => convert(l, t)?,
                            None => Value::Null,
                        };
                        Ok((f.clone(), v))
                    })
                    .collect::<Result<_, String>>()
                    .map(Value::Struct)
            }
            (Lit::Struct(_), _) => Err(format!("a struct literal is not a {ty}")),
        }
    }
    let v = convert(lit, ty)?;
    Ok((!v.is_null()).then_some(v))
}

#[cfg(test)]
mod tests;
