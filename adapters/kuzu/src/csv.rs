//! Bulk inserts through CSV files and Kuzu's own `COPY … FROM 'file'`: for large batches of
//! new rows whose columns are all simple types, this is several times faster than passing
//! the rows as a parameter list (building `kuzu::Value` structs dominated the profile).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use kuzu_sync_engine::{DataType, Value};

/// Types whose text form Kuzu's CSV reader parses back exactly.
pub fn csv_safe(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Bool
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Int128
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float
            | DataType::Double
            | DataType::String
            | DataType::Date
            | DataType::Timestamp
            | DataType::Uuid
    )
}

/// Values the CSV path can carry: Kuzu's CSV reader reads an empty string, quoted or not,
/// as NULL, so a row with an empty string takes the parameter path.
pub fn csv_values_safe<'v>(mut values: impl Iterator<Item = &'v Value>) -> bool {
    values.all(|v| !matches!(v, Value::String(s) if s.is_empty()))
}

/// A CSV file being written: comma-separated, `"`-quoted strings with `""` for a quote,
/// NULL as an empty unquoted field.
#[derive(Debug)]
pub struct CsvFile {
    path: PathBuf,
    buf: String,
    /// A string field contains a line break: the file must be read without parallelism.
    pub multiline: bool,
}

impl CsvFile {
    /// A new file in `dir`, named by this process and a sequence number only: no part of
    /// a file name ever comes from a table name (names come from peers).
    pub fn new(dir: &Path) -> Self {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CsvFile {
            path: dir.join(format!(".ks-copy.{}.{n}.csv", std::process::id())),
            buf: String::new(),
            multiline: false,
        }
    }

    pub fn row<'v>(&mut self, fields: impl IntoIterator<Item = &'v Value>) {
        for (i, v) in fields.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            self.field(v);
        }
        self.buf.push('\n');
    }

    fn field(&mut self, v: &Value) {
        match v {
            Value::Null => {}
            Value::String(s) => {
                if s.contains(['\n', '\r']) {
                    self.multiline = true;
                }
                self.buf.push('"');
                for ch in s.chars() {
                    if ch == '"' {
                        self.buf.push('"');
                    }
                    self.buf.push(ch);
                }
                self.buf.push('"');
            }
            Value::Bool(b) => self.buf.push_str(if *b { "true" } else { "false" }),
            Value::Float(f) => {
                let _ = write!(self.buf, "{f:?}");
            }
            Value::Double(f) => {
                let _ = write!(self.buf, "{f:?}");
            }
            other => {
                let _ = write!(self.buf, "{other}");
            }
        }
    }

    /// Writes the file and returns its path and the COPY options to read it.
    pub fn finish(&self) -> std::io::Result<(&Path, String)> {
        let mut f = std::fs::File::create(&self.path)?;
        f.write_all(self.buf.as_bytes())?;
        f.sync_all()?;
        let parallel = if self.multiline {
            ", PARALLEL=false"
        } else {
            ""
        };
        Ok((
            &self.path,
            format!("(HEADER=false, DELIM=',', QUOTE='\"', ESCAPE='\"'{parallel})"),
        ))
    }
}

impl Drop for CsvFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
