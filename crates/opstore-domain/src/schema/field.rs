//! Declared fields: their portable types and flags, and TTLs.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// A scalar portable type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalarType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// true / false.
    Bool,
    /// [`crate::Timestamp`] in its canonical text form.
    Timestamp,
}

/// The portable type of a declared field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// true / false.
    Bool,
    /// [`crate::Timestamp`] in its canonical text form.
    Timestamp,
    /// A nested object whose own fields are declared separately by dotted path.
    Object,
    /// Free-form JSON: any value, any sub-path (metadata maps, labels).
    Json,
    /// An ordered list of scalars.
    List(ScalarType),
    /// A set of scalars (no duplicates; stored sorted on backends without sets).
    Set(ScalarType),
    /// A string-keyed map of scalars.
    Map(ScalarType),
}

impl FieldType {
    /// The scalar kind when the type is a scalar.
    pub fn scalar(self) -> Option<ScalarType> {
        Some(match self {
            FieldType::String => ScalarType::String,
            FieldType::Int => ScalarType::Int,
            FieldType::Float => ScalarType::Float,
            FieldType::Bool => ScalarType::Bool,
            FieldType::Timestamp => ScalarType::Timestamp,
            _ => return None,
        })
    }

    /// Whether values of this type can be ordered (sort, range filters, min/max).
    pub fn is_sortable(self) -> bool {
        self.scalar().is_some()
    }

    /// Whether `inc` and `sum` apply.
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Int | FieldType::Float | FieldType::Json)
    }

    /// Whether `value` (not null) is a valid value of this type.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            FieldType::Object => value.is_object(),
            FieldType::Json => true,
            FieldType::List(s) | FieldType::Set(s) => value
                .as_array()
                .is_some_and(|items| items.iter().all(|v| scalar_accepts(s, v))),
            FieldType::Map(s) => value
                .as_object()
                .is_some_and(|m| m.values().all(|v| scalar_accepts(s, v))),
            other => other.scalar().is_some_and(|s| scalar_accepts(s, value)),
        }
    }

    /// Element type of a list or set.
    pub fn element(self) -> Option<ScalarType> {
        match self {
            FieldType::List(s) | FieldType::Set(s) => Some(s),
            _ => None,
        }
    }
}

/// Whether `value` is a valid value of scalar type `s`.
pub fn scalar_accepts(s: ScalarType, value: &Value) -> bool {
    match s {
        ScalarType::String => value.is_string(),
        ScalarType::Int => value.is_i64() || value.is_u64() && value.as_i64().is_some(),
        ScalarType::Float => value.is_number(),
        ScalarType::Bool => value.is_boolean(),
        ScalarType::Timestamp => value.as_str().is_some_and(is_canonical_timestamp),
    }
}

/// Whether `s` is a timestamp in the canonical text form
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (checked without allocating: this runs on every write).
pub fn is_canonical_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 27 {
        return false;
    }
    const SHAPE: &[u8; 27] = b"0000-00-00T00:00:00.000000Z";
    let shape_ok = b.iter().zip(SHAPE).all(|(&c, &want)| {
        if want == b'0' {
            c.is_ascii_digit()
        } else {
            c == want
        }
    });
    if !shape_ok {
        return false;
    }
    let num =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0'));
    let (month, day, hour, minute, second) =
        (num(5..7), num(8..10), num(11..13), num(14..16), num(17..19));
    (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60 && second < 60
}

/// A declared field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub(super) path: String,
    pub(super) ty: FieldType,
    pub(super) indexed: bool,
    pub(super) unique: bool,
    pub(super) optional: bool,
}

impl Field {
    /// A required, unindexed field at a dotted `path`.
    pub fn new(path: &str, ty: FieldType) -> Self {
        Field {
            path: path.to_owned(),
            ty,
            indexed: false,
            unique: false,
            optional: false,
        }
    }

    /// Adds a secondary index.
    pub fn indexed(mut self) -> Self {
        self.indexed = true;
        self
    }

    /// Adds a unique index (implies indexed). Absent values do not collide.
    pub fn unique(mut self) -> Self {
        self.indexed = true;
        self.unique = true;
        self
    }

    /// Allows the field to be absent or null.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Dotted path.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// Portable type.
    pub fn ty(&self) -> FieldType {
        self.ty
    }
    /// Has a secondary index.
    pub fn is_indexed(&self) -> bool {
        self.indexed
    }
    /// Has a unique index.
    pub fn is_unique(&self) -> bool {
        self.unique
    }
    /// May be absent or null.
    pub fn is_optional(&self) -> bool {
        self.optional
    }
}

/// Expiry of documents a fixed time after a timestamp field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ttl {
    /// Timestamp field the expiry counts from.
    pub field: String,
    /// How long after that instant a document expires.
    pub after: Duration,
}
