//! The adapter's own CQL values, rows and statements: the vocabulary of the
//! [`CqlSession`](crate::session::CqlSession) seam, independent of the driver.

use std::fmt;
use std::sync::Arc;

/// A CQL value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum CqlValue {
    /// An explicit null (deletes the cell when written).
    Null,
    /// Not set: the column is left untouched (no tombstone).
    Unset,
    /// `text`.
    Text(String),
    /// `bigint` (also read from `int`, `smallint`, `tinyint`).
    BigInt(i64),
    /// `int`.
    Int(i32),
    /// `double`.
    Double(f64),
    /// `boolean`.
    Boolean(bool),
    /// `timestamp`, milliseconds since the Unix epoch.
    Timestamp(i64),
    /// `blob`.
    Blob(Vec<u8>),
    /// `timeuuid`, as its 16 bytes.
    Timeuuid([u8; 16]),
    /// `list<...>`.
    List(Vec<CqlValue>),
    /// `set<...>`.
    Set(Vec<CqlValue>),
    /// `map<...>`.
    Map(Vec<(CqlValue, CqlValue)>),
}

impl CqlValue {
    /// The text, when this is `text`.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            CqlValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, when this is an integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            CqlValue::BigInt(v) => Some(*v),
            CqlValue::Int(v) => Some(i64::from(*v)),
            _ => None,
        }
    }

    /// The boolean, when this is `boolean`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            CqlValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// Whether the value is null.
    pub fn is_null(&self) -> bool {
        matches!(self, CqlValue::Null)
    }
}

/// One result row: column names shared by the rows of a result, and values.
#[derive(Clone, PartialEq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<CqlValue>,
}

impl Row {
    /// A row; `values[i]` belongs to `columns[i]`.
    pub fn new(columns: Arc<[String]>, values: Vec<CqlValue>) -> Self {
        Row { columns, values }
    }

    /// A row built from `(column, value)` pairs (tests and canned results).
    pub fn from_pairs(pairs: Vec<(&str, CqlValue)>) -> Self {
        let columns: Arc<[String]> = pairs.iter().map(|(c, _)| (*c).to_owned()).collect();
        let values = pairs.into_iter().map(|(_, v)| v).collect();
        Row { columns, values }
    }

    /// The value of `column`; `None` when the result has no such column.
    pub fn get(&self, column: &str) -> Option<&CqlValue> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.values.get(i)
    }

    /// Text in `column`, if present and not null.
    pub fn text(&self, column: &str) -> Option<&str> {
        self.get(column).and_then(CqlValue::as_text)
    }

    /// Integer in `column`, if present and not null.
    pub fn int(&self, column: &str) -> Option<i64> {
        self.get(column).and_then(CqlValue::as_i64)
    }

    /// Column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Values in column order.
    pub fn values(&self) -> &[CqlValue] {
        &self.values
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.columns.iter().zip(&self.values))
            .finish()
    }
}

/// Consistency level of a read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// ANY (writes only).
    Any,
    /// ONE.
    One,
    /// TWO.
    Two,
    /// THREE.
    Three,
    /// QUORUM.
    Quorum,
    /// ALL.
    All,
    /// LOCAL_QUORUM.
    LocalQuorum,
    /// EACH_QUORUM.
    EachQuorum,
    /// LOCAL_ONE.
    LocalOne,
    /// SERIAL (linearizable reads of LWT-written data).
    Serial,
    /// LOCAL_SERIAL.
    LocalSerial,
}

impl Consistency {
    /// Parses the CQL name (`quorum`, `LOCAL_QUORUM`, `local-one`, ...).
    pub fn parse(text: &str) -> Option<Self> {
        let norm = text.trim().to_ascii_uppercase().replace('-', "_");
        Some(match norm.as_str() {
            "ANY" => Consistency::Any,
            "ONE" => Consistency::One,
            "TWO" => Consistency::Two,
            "THREE" => Consistency::Three,
            "QUORUM" => Consistency::Quorum,
            "ALL" => Consistency::All,
            "LOCAL_QUORUM" => Consistency::LocalQuorum,
            "EACH_QUORUM" => Consistency::EachQuorum,
            "LOCAL_ONE" => Consistency::LocalOne,
            "SERIAL" => Consistency::Serial,
            "LOCAL_SERIAL" => Consistency::LocalSerial,
            _ => return None,
        })
    }

    /// Whether this is a serial level (valid for LWT conditions and serial reads).
    pub fn is_serial(self) -> bool {
        matches!(self, Consistency::Serial | Consistency::LocalSerial)
    }
}

/// How a batch is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Atomic across partitions (batch log).
    Logged,
    /// No batch log: one round trip, best for rows of one partition.
    Unlogged,
}

/// A statement and how to run it. The session prepares each distinct `cql` once.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// CQL text with `?` markers.
    pub cql: String,
    /// Consistency of the read or write.
    pub consistency: Consistency,
    /// Serial consistency of an LWT condition (`None` for plain statements).
    pub serial_consistency: Option<Consistency>,
    /// Safe to retry after a timeout (plain writes and reads; never LWT).
    pub idempotent: bool,
    /// Rows per page for paged reads.
    pub page_size: i32,
}

impl Statement {
    /// A plain, idempotent statement.
    pub fn new(cql: impl Into<String>, consistency: Consistency) -> Self {
        Statement {
            cql: cql.into(),
            consistency,
            serial_consistency: None,
            idempotent: true,
            page_size: 1000,
        }
    }

    /// A lightweight transaction: serial consistency for its Paxos round, not retried.
    pub fn lwt(cql: impl Into<String>, consistency: Consistency, serial: Consistency) -> Self {
        Statement {
            cql: cql.into(),
            consistency,
            serial_consistency: Some(serial),
            idempotent: false,
            page_size: 1000,
        }
    }

    /// The same statement with another page size.
    pub fn with_page_size(mut self, page_size: i32) -> Self {
        self.page_size = page_size;
        self
    }
}

/// Whether an LWT result row reports `[applied] = true`.
///
/// A conditional statement returns one row whose first column is `[applied]`;
/// when it is false the other columns hold the current values the condition saw.
pub fn applied(rows: &[Row]) -> Result<bool, String> {
    let Some(row) = rows.first() else {
        return Err("conditional statement returned no [applied] row".into());
    };
    match row.get("[applied]") {
        Some(CqlValue::Boolean(b)) => Ok(*b),
        Some(other) => Err(format!("[applied] column is not a boolean: {other:?}")),
        None => Err("conditional statement result lacks the [applied] column".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_reads_the_flag_and_the_current_values() {
        let rows = vec![Row::from_pairs(vec![
            ("[applied]", CqlValue::Boolean(false)),
            ("owner", CqlValue::Text("w1".into())),
        ])];
        assert!(!applied(&rows).unwrap());
        assert_eq!(rows[0].text("owner"), Some("w1"));
        let ok = vec![Row::from_pairs(vec![(
            "[applied]",
            CqlValue::Boolean(true),
        )])];
        assert!(applied(&ok).unwrap());
    }

    #[test]
    fn applied_rejects_results_without_the_flag() {
        assert!(applied(&[]).unwrap_err().contains("no [applied] row"));
        let rows = vec![Row::from_pairs(vec![("x", CqlValue::Int(1))])];
        assert!(applied(&rows).unwrap_err().contains("lacks"));
        let rows = vec![Row::from_pairs(vec![("[applied]", CqlValue::Int(1))])];
        assert!(applied(&rows).unwrap_err().contains("not a boolean"));
    }

    #[test]
    fn consistency_names_parse() {
        assert_eq!(Consistency::parse("quorum"), Some(Consistency::Quorum));
        assert_eq!(
            Consistency::parse("local-serial"),
            Some(Consistency::LocalSerial)
        );
        assert_eq!(Consistency::parse("LOCAL_ONE"), Some(Consistency::LocalOne));
        assert_eq!(Consistency::parse("most"), None);
        assert!(Consistency::LocalSerial.is_serial());
        assert!(!Consistency::Quorum.is_serial());
    }
}
