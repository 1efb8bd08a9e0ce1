//! How one entity maps onto one CQL table: columns and their types, the
//! document <-> row conversion, and the statement text of every write and read.

use opstore_domain::eval::get_path;
use opstore_domain::{FieldType, Result, ScalarType, Schema, StoreError, Timestamp, Value};

use crate::value::CqlValue;

/// Column holding the whole JSON document (the source of truth on reads).
pub const DOC: &str = "doc";
/// Column naming the kind of the last write (`insert`, `update`, `replace`), read
/// by the change feed from the CDC log.
pub const LAST_OP: &str = "last_op";

/// A typed column materialised from a declared field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The field path (also the column name, quoted).
    pub path: String,
    /// Portable type.
    pub ty: FieldType,
}

impl Column {
    /// The quoted CQL identifier: the dotted path kept verbatim.
    pub fn ident(&self) -> String {
        quote(&self.path)
    }
}

/// Quotes an identifier. Schema paths hold only `[A-Za-z0-9_.-]`, so no escaping is needed.
pub fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// The CQL type of a scalar.
pub fn scalar_cql(s: ScalarType) -> &'static str {
    match s {
        ScalarType::String => "text",
        ScalarType::Int => "bigint",
        ScalarType::Float => "double",
        ScalarType::Bool => "boolean",
        ScalarType::Timestamp => "timestamp",
    }
}

/// The CQL type of a field; `None` for `Object` and `Json`, which live in `doc` only.
pub fn cql_type(ty: FieldType) -> Option<String> {
    Some(match ty {
        FieldType::String => "text".into(),
        FieldType::Int => "bigint".into(),
        FieldType::Float => "double".into(),
        FieldType::Bool => "boolean".into(),
        FieldType::Timestamp => "timestamp".into(),
        FieldType::List(s) => format!("list<{}>", scalar_cql(s)),
        FieldType::Set(s) => format!("set<{}>", scalar_cql(s)),
        FieldType::Map(s) => format!("map<text, {}>", scalar_cql(s)),
        FieldType::Object | FieldType::Json => return None,
    })
}

/// Shortens a dotted path to an unquoted identifier part (`status.state` -> `status_state`).
pub fn sanitize(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The table of one entity in one keyspace.
#[derive(Debug, Clone)]
pub struct TableLayout {
    /// Keyspace.
    pub keyspace: String,
    /// The entity schema.
    pub schema: &'static Schema,
    /// Typed columns: the key first, then clustering columns, then other fields.
    pub columns: Vec<Column>,
}

impl TableLayout {
    /// The layout of `schema` in `keyspace`.
    pub fn new(keyspace: &str, schema: &'static Schema) -> Self {
        let key = schema.key();
        let clustering = schema.clustering_key();
        let mut columns: Vec<Column> = Vec::new();
        let push = |columns: &mut Vec<Column>, path: &str| {
            if let Some(f) = schema.field(path) {
                if cql_type(f.ty()).is_some() && !columns.iter().any(|c| c.path == path) {
                    columns.push(Column {
                        path: path.to_owned(),
                        ty: f.ty(),
                    });
                }
            }
        };
        push(&mut columns, key);
        for c in clustering {
            push(&mut columns, c);
        }
        for f in schema.fields() {
            push(&mut columns, f.path());
        }
        TableLayout {
            keyspace: keyspace.to_owned(),
            schema,
            columns,
        }
    }

    /// `keyspace.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.keyspace, self.schema.name())
    }

    /// The table name.
    pub fn name(&self) -> &str {
        self.schema.name()
    }

    /// The typed column for `path`, if the field has one.
    pub fn column(&self, path: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.path == path)
    }

    /// Whether `path` has a secondary index (or is the key).
    pub fn is_indexed(&self, path: &str) -> bool {
        path == self.schema.key()
            || self
                .schema
                .field(path)
                .is_some_and(|f| f.is_indexed() && cql_type(f.ty()).is_some())
    }

    /// Columns written by every insert and update: typed columns, `doc`, `last_op`.
    fn written(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(Column::ident)
            .chain([DOC.to_owned(), LAST_OP.to_owned()])
            .collect()
    }

    fn ttl_clause(&self) -> &'static str {
        if self.schema.ttl().is_some() {
            " USING TTL ?"
        } else {
            ""
        }
    }

    /// Select list of reads: typed columns and `doc`.
    pub fn select_list(&self) -> String {
        let mut cols: Vec<String> = self.columns.iter().map(Column::ident).collect();
        cols.push(DOC.to_owned());
        cols.join(", ")
    }

    /// `INSERT ... IF NOT EXISTS [USING TTL ?]`: values are the row values, then the TTL.
    pub fn insert_cql(&self, conditional: bool) -> String {
        let cols = self.written();
        let marks = vec!["?"; cols.len()].join(", ");
        format!(
            "INSERT INTO {} ({}) VALUES ({}){}{}",
            self.qualified(),
            cols.join(", "),
            marks,
            if conditional { " IF NOT EXISTS" } else { "" },
            self.ttl_clause()
        )
    }

    /// Compare-and-set of a whole row: `UPDATE [USING TTL ?] SET <cols> WHERE <pk> IF doc = ?`.
    /// Values: TTL (if any), non-key columns, doc, last_op, primary key, expected doc.
    pub fn update_cas_cql(&self) -> String {
        let sets: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.is_primary(&c.path))
            .map(|c| format!("{} = ?", c.ident()))
            .chain([format!("{DOC} = ?"), format!("{LAST_OP} = ?")])
            .collect();
        format!(
            "UPDATE {}{} SET {} WHERE {} IF {DOC} = ?",
            self.qualified(),
            self.ttl_clause(),
            sets.join(", "),
            self.pk_where()
        )
    }

    /// `DELETE FROM ... WHERE <pk> IF doc = ?`.
    pub fn delete_cas_cql(&self) -> String {
        format!(
            "DELETE FROM {} WHERE {} IF {DOC} = ?",
            self.qualified(),
            self.pk_where()
        )
    }

    /// `SELECT ... WHERE key = ?`: one partition.
    pub fn select_by_key_cql(&self) -> String {
        format!(
            "SELECT {} FROM {} WHERE {} = ?",
            self.select_list(),
            self.qualified(),
            quote(self.schema.key())
        )
    }

    fn is_primary(&self, path: &str) -> bool {
        path == self.schema.key() || self.schema.clustering_key().iter().any(|c| c == path)
    }

    fn pk_where(&self) -> String {
        std::iter::once(self.schema.key())
            .chain(self.schema.clustering_key().iter().map(String::as_str))
            .map(|p| format!("{} = ?", quote(p)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Values of the typed columns of `doc` in column order. `absent` is what an
    /// absent field binds to: `Unset` for inserts (no tombstone), `Null` for updates.
    pub fn column_values(&self, doc: &Value, absent: &CqlValue) -> Result<Vec<CqlValue>> {
        self.columns
            .iter()
            .map(|c| match get_path(doc, &c.path) {
                None => Ok(absent.clone()),
                Some(v) => to_cql(c.ty, v).map_err(|m| {
                    StoreError::Validation(format!("field `{}` of `{}`: {m}", c.path, self.name()))
                }),
            })
            .collect()
    }

    /// Values of [`Self::insert_cql`].
    pub fn insert_values(&self, doc: &Value, op: &str, ttl: Option<i32>) -> Result<Vec<CqlValue>> {
        let mut values = self.column_values(doc, &CqlValue::Unset)?;
        values.push(CqlValue::Text(doc.to_string()));
        values.push(CqlValue::Text(op.to_owned()));
        if let Some(ttl) = ttl {
            values.push(CqlValue::Int(ttl));
        }
        Ok(values)
    }

    /// Values of [`Self::update_cas_cql`]; `expected` is the stored `doc` text.
    pub fn update_values(
        &self,
        doc: &Value,
        op: &str,
        ttl: Option<i32>,
        expected: &str,
    ) -> Result<Vec<CqlValue>> {
        let all = self.column_values(doc, &CqlValue::Null)?;
        let mut values = Vec::with_capacity(all.len() + 5);
        if let Some(ttl) = ttl {
            values.push(CqlValue::Int(ttl));
        }
        let mut pk = Vec::new();
        for (c, v) in self.columns.iter().zip(all) {
            if self.is_primary(&c.path) {
                pk.push((c.path.clone(), v));
            } else {
                values.push(v);
            }
        }
        values.push(CqlValue::Text(doc.to_string()));
        values.push(CqlValue::Text(op.to_owned()));
        values.extend(self.pk_values(doc)?);
        values.push(CqlValue::Text(expected.to_owned()));
        Ok(values)
    }

    /// Primary key values of `doc` in `WHERE` order.
    pub fn pk_values(&self, doc: &Value) -> Result<Vec<CqlValue>> {
        std::iter::once(self.schema.key())
            .chain(self.schema.clustering_key().iter().map(String::as_str))
            .map(|p| {
                let col = self.column(p).ok_or_else(|| {
                    StoreError::Validation(format!("primary key field `{p}` has no column"))
                })?;
                match get_path(doc, p) {
                    Some(v) => to_cql(col.ty, v).map_err(StoreError::Validation),
                    None => Err(StoreError::Validation(format!(
                        "document in `{}` lacks primary key field `{p}`",
                        self.name()
                    ))),
                }
            })
            .collect()
    }

    /// Whether two documents differ in a clustering column (which CQL cannot update).
    pub fn clustering_changed(&self, old: &Value, new: &Value) -> Option<&str> {
        self.schema
            .clustering_key()
            .iter()
            .find(|c| get_path(old, c) != get_path(new, c))
            .map(String::as_str)
    }

    /// Whether `doc` has expired under the schema TTL at `now`.
    pub fn expired(&self, doc: &Value, now: Timestamp) -> bool {
        expiry(self.schema, doc).is_some_and(|at| at <= now)
    }

    /// The `USING TTL` seconds for `doc` written at `now`: `None` without a schema
    /// TTL; `0` (no expiry) when the TTL field is absent; at least 1 otherwise.
    pub fn ttl_seconds(&self, doc: &Value, now: Timestamp) -> Option<i32> {
        self.schema.ttl()?;
        Some(match expiry(self.schema, doc) {
            None => 0,
            Some(at) => {
                let micros = at.as_micros().saturating_sub(now.as_micros());
                let secs = (micros + 999_999).div_euclid(1_000_000);
                i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
            }
        })
    }

    /// The document of a result row: the `doc` column, or when it is null (a row
    /// written by another tool) the typed columns assembled into a document.
    pub fn document(&self, row: &crate::value::Row) -> Result<Value> {
        if let Some(text) = row.text(DOC) {
            return serde_json::from_str(text).map_err(|e| StoreError::Backend {
                message: format!(
                    "row `{}` of `{}` holds a malformed doc column: {e}",
                    row.text(self.schema.key()).unwrap_or("?"),
                    self.name()
                ),
                source: None,
            });
        }
        let mut doc = Value::Object(serde_json::Map::new());
        for c in &self.columns {
            if let Some(v) = row.get(&c.path) {
                if let Some(json) = from_cql(c.ty, v) {
                    opstore_domain::eval::set_path(&mut doc, &c.path, json);
                }
            }
        }
        Ok(doc)
    }
}

/// When `doc` expires under `schema`'s TTL.
pub fn expiry(schema: &Schema, doc: &Value) -> Option<Timestamp> {
    let ttl = schema.ttl()?;
    get_path(doc, &ttl.field)
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|at| at.add(ttl.after))
}

/// Converts a JSON value to the CQL value of a column of type `ty`.
pub fn to_cql(ty: FieldType, v: &Value) -> std::result::Result<CqlValue, String> {
    match ty {
        FieldType::List(s) => items(s, v).map(CqlValue::List),
        FieldType::Set(s) => items(s, v).map(|mut items| {
            items.dedup();
            CqlValue::Set(items)
        }),
        FieldType::Map(s) => {
            let obj = v.as_object().ok_or("expected an object")?;
            obj.iter()
                .map(|(k, v)| Ok((CqlValue::Text(k.clone()), scalar_to_cql(s, v)?)))
                .collect::<std::result::Result<Vec<_>, String>>()
                .map(CqlValue::Map)
        }
        other => match other.scalar() {
            Some(s) => scalar_to_cql(s, v),
            None => Err(format!("{other:?} has no column")),
        },
    }
}

fn items(s: ScalarType, v: &Value) -> std::result::Result<Vec<CqlValue>, String> {
    v.as_array()
        .ok_or("expected an array")?
        .iter()
        .map(|i| scalar_to_cql(s, i))
        .collect()
}

/// Converts a JSON scalar to CQL; an integer column rejects fractions.
pub fn scalar_to_cql(s: ScalarType, v: &Value) -> std::result::Result<CqlValue, String> {
    let bad = || format!("expected {s:?}, got {v}");
    Ok(match s {
        ScalarType::String => CqlValue::Text(v.as_str().ok_or_else(bad)?.to_owned()),
        ScalarType::Int => match (v.as_i64(), v.as_f64()) {
            (Some(i), _) => CqlValue::BigInt(i),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => CqlValue::BigInt(f as i64),
            _ => return Err(bad()),
        },
        ScalarType::Float => CqlValue::Double(v.as_f64().ok_or_else(bad)?),
        ScalarType::Bool => CqlValue::Boolean(v.as_bool().ok_or_else(bad)?),
        ScalarType::Timestamp => {
            let t: Timestamp = v.as_str().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            CqlValue::Timestamp(t.as_millis())
        }
    })
}

/// Converts a CQL column value back to JSON (`None` for null).
pub fn from_cql(ty: FieldType, v: &CqlValue) -> Option<Value> {
    let scalar = |s: ScalarType, v: &CqlValue| -> Option<Value> {
        Some(match (s, v) {
            (_, CqlValue::Null | CqlValue::Unset) => return None,
            (ScalarType::Timestamp, CqlValue::Timestamp(ms)) => {
                Value::String(Timestamp::from_millis(*ms).to_text())
            }
            (_, CqlValue::Text(t)) => Value::String(t.clone()),
            (_, CqlValue::Boolean(b)) => Value::Bool(*b),
            (ScalarType::Float, CqlValue::Double(f)) => {
                serde_json::Number::from_f64(*f).map(Value::Number)?
            }
            (_, CqlValue::Double(f)) => serde_json::Number::from_f64(*f).map(Value::Number)?,
            (_, other) => Value::from(other.as_i64()?),
        })
    };
    match (ty, v) {
        (_, CqlValue::Null | CqlValue::Unset) => None,
        (FieldType::List(s) | FieldType::Set(s), CqlValue::List(items) | CqlValue::Set(items)) => {
            Some(Value::Array(
                items.iter().filter_map(|i| scalar(s, i)).collect(),
            ))
        }
        (FieldType::Map(s), CqlValue::Map(entries)) => Some(Value::Object(
            entries
                .iter()
                .filter_map(|(k, v)| Some((k.as_text()?.to_owned(), scalar(s, v)?)))
                .collect(),
        )),
        (other, v) => scalar(other.scalar()?, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Row;
    use opstore_domain::{Field, json};
    use std::sync::LazyLock;
    use std::time::Duration;

    static ALL: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("all_types", "id")
            .field(Field::new("s", FieldType::String).indexed())
            .field(Field::new("i", FieldType::Int))
            .field(Field::new("f", FieldType::Float))
            .field(Field::new("b", FieldType::Bool))
            .field(Field::new("t", FieldType::Timestamp))
            .field(Field::new("l", FieldType::List(ScalarType::Int)))
            .field(Field::new("st", FieldType::Set(ScalarType::String)))
            .field(Field::new("m", FieldType::Map(ScalarType::Float)))
            .field(Field::new("o", FieldType::Object))
            .field(Field::new("o.x", FieldType::String))
            .field(Field::new("j", FieldType::Json).optional())
            .ttl("t", Duration::from_secs(60))
            .build()
    });

    fn layout() -> TableLayout {
        TableLayout::new("ks", &ALL)
    }

    fn doc() -> Value {
        json!({"id": "a", "s": "x", "i": 3, "f": 1.5, "b": true,
               "t": "2026-01-01T00:00:00.123456Z", "l": [1, 2], "st": ["p", "q"],
               "m": {"k": 2.5}, "o": {"x": "y"}, "j": {"deep": [1, {"z": null}]}})
    }

    #[test]
    fn every_portable_type_has_its_cql_type() {
        assert_eq!(cql_type(FieldType::String).unwrap(), "text");
        assert_eq!(cql_type(FieldType::Int).unwrap(), "bigint");
        assert_eq!(cql_type(FieldType::Float).unwrap(), "double");
        assert_eq!(cql_type(FieldType::Bool).unwrap(), "boolean");
        assert_eq!(cql_type(FieldType::Timestamp).unwrap(), "timestamp");
        assert_eq!(
            cql_type(FieldType::List(ScalarType::Int)).unwrap(),
            "list<bigint>"
        );
        assert_eq!(
            cql_type(FieldType::Set(ScalarType::Timestamp)).unwrap(),
            "set<timestamp>"
        );
        assert_eq!(
            cql_type(FieldType::Map(ScalarType::Bool)).unwrap(),
            "map<text, boolean>"
        );
        assert_eq!(cql_type(FieldType::Object), None);
        assert_eq!(cql_type(FieldType::Json), None);
    }

    #[test]
    fn nested_scalars_get_quoted_dotted_columns() {
        let l = layout();
        let names: Vec<&str> = l.columns.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            names,
            ["id", "s", "i", "f", "b", "t", "l", "st", "m", "o.x"]
        );
        assert_eq!(l.column("o.x").unwrap().ident(), "\"o.x\"");
    }

    #[test]
    fn insert_and_cas_statements() {
        let l = layout();
        assert_eq!(
            l.insert_cql(true),
            "INSERT INTO ks.all_types (\"id\", \"s\", \"i\", \"f\", \"b\", \"t\", \"l\", \"st\", \"m\", \"o.x\", doc, last_op) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
        );
        assert_eq!(
            l.update_cas_cql(),
            "UPDATE ks.all_types USING TTL ? SET \"s\" = ?, \"i\" = ?, \"f\" = ?, \"b\" = ?, \"t\" = ?, \"l\" = ?, \
             \"st\" = ?, \"m\" = ?, \"o.x\" = ?, doc = ?, last_op = ? WHERE \"id\" = ? IF doc = ?"
        );
        assert_eq!(
            l.delete_cas_cql(),
            "DELETE FROM ks.all_types WHERE \"id\" = ? IF doc = ?"
        );
        assert_eq!(
            l.select_by_key_cql(),
            "SELECT \"id\", \"s\", \"i\", \"f\", \"b\", \"t\", \"l\", \"st\", \"m\", \"o.x\", doc FROM ks.all_types WHERE \"id\" = ?"
        );
    }

    #[test]
    fn documents_bind_to_typed_values() {
        let l = layout();
        let values = l.insert_values(&doc(), "insert", Some(60)).unwrap();
        assert_eq!(values[0], CqlValue::Text("a".into()));
        assert_eq!(values[2], CqlValue::BigInt(3));
        assert_eq!(values[3], CqlValue::Double(1.5));
        assert_eq!(values[4], CqlValue::Boolean(true));
        assert_eq!(values[5], CqlValue::Timestamp(1_767_225_600_123));
        assert_eq!(
            values[6],
            CqlValue::List(vec![CqlValue::BigInt(1), CqlValue::BigInt(2)])
        );
        assert_eq!(
            values[8],
            CqlValue::Map(vec![(CqlValue::Text("k".into()), CqlValue::Double(2.5))])
        );
        assert_eq!(values[9], CqlValue::Text("y".into()));
        assert_eq!(values[12], CqlValue::Int(60));
        let back: Value = serde_json::from_str(values[10].as_text().unwrap()).unwrap();
        assert_eq!(back, doc());
    }

    #[test]
    fn absent_fields_are_unset_on_insert_and_null_on_update() {
        let l = layout();
        let sparse = json!({"id": "a"});
        let ins = l.insert_values(&sparse, "insert", None).unwrap();
        assert_eq!(ins[1], CqlValue::Unset);
        let upd = l.update_values(&sparse, "update", None, "{}").unwrap();
        assert_eq!(upd[0], CqlValue::Null);
        assert_eq!(upd.last(), Some(&CqlValue::Text("{}".into())));
        assert_eq!(upd[upd.len() - 2], CqlValue::Text("a".into()));
    }

    #[test]
    fn rows_map_back_to_documents_from_doc_or_columns() {
        let l = layout();
        let row = Row::from_pairs(vec![
            ("id", CqlValue::Text("a".into())),
            (DOC, CqlValue::Text(doc().to_string())),
        ]);
        assert_eq!(l.document(&row).unwrap(), doc());
        let bare = Row::from_pairs(vec![
            ("id", CqlValue::Text("b".into())),
            ("i", CqlValue::BigInt(7)),
            ("t", CqlValue::Timestamp(1_767_225_600_123)),
            ("st", CqlValue::Set(vec![CqlValue::Text("p".into())])),
            (
                "m",
                CqlValue::Map(vec![(CqlValue::Text("k".into()), CqlValue::Double(0.5))]),
            ),
            ("o.x", CqlValue::Text("y".into())),
            ("f", CqlValue::Null),
            (DOC, CqlValue::Null),
        ]);
        assert_eq!(
            l.document(&bare).unwrap(),
            json!({"id": "b", "i": 7, "t": "2026-01-01T00:00:00.123000Z", "st": ["p"],
                   "m": {"k": 0.5}, "o": {"x": "y"}})
        );
        let broken = Row::from_pairs(vec![(DOC, CqlValue::Text("{".into()))]);
        assert!(l.document(&broken).unwrap_err().is_backend());
    }

    #[test]
    fn wrong_values_are_validation_errors() {
        assert!(scalar_to_cql(ScalarType::Int, &json!(1.5)).is_err());
        assert_eq!(
            scalar_to_cql(ScalarType::Int, &json!(2.0)).unwrap(),
            CqlValue::BigInt(2)
        );
        assert!(scalar_to_cql(ScalarType::Timestamp, &json!("yesterday")).is_err());
        let l = layout();
        let err = l
            .insert_values(&json!({"id": "a", "i": "x"}), "insert", None)
            .unwrap_err();
        assert!(err.is_validation() && err.to_string().contains("field `i`"));
    }

    #[test]
    fn ttl_counts_from_the_field_and_rounds_up() {
        let l = layout();
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        // Expires at 00:01:00.123456, 30.123456 s after now.
        assert_eq!(l.ttl_seconds(&doc(), now), Some(31));
        let late: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        assert_eq!(l.ttl_seconds(&doc(), late), Some(1));
        assert!(l.expired(&doc(), late));
        assert!(!l.expired(&doc(), now));
    }
}
