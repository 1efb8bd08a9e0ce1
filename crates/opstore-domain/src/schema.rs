//! Entity schemas: the single source for validation, SQL, CQL and index specs.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Result, invalid};
use crate::query::{SortDir, SortKey};

mod field;
mod tree;

pub use field::{Field, FieldType, ScalarType, Ttl, is_canonical_timestamp, scalar_accepts};

use tree::FieldTree;

/// A type stored by opstore: a serde type with a static schema.
///
/// ```
/// use std::sync::LazyLock;
/// use opstore_domain::{Entity, Field, FieldType, Schema};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Node { id: String, name: String, healthy: bool }
///
/// static NODE: LazyLock<Schema> = LazyLock::new(|| {
///     Schema::builder("nodes", "id")
///         .field(Field::new("name", FieldType::String).indexed())
///         .field(Field::new("healthy", FieldType::Bool))
///         .build()
/// });
///
/// impl Entity for Node {
///     fn schema() -> &'static Schema { &NODE }
///     fn key(&self) -> String { self.id.clone() }
/// }
/// assert_eq!(Node::schema().name(), "nodes");
/// ```
pub trait Entity: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The schema shared by every instance.
    fn schema() -> &'static Schema;
    /// The value of the key field.
    fn key(&self) -> String;
}

/// The static description of an entity's storage.
#[derive(Debug, Clone, Serialize)]
pub struct Schema {
    name: String,
    key: String,
    partition_key: Vec<String>,
    clustering_key: Vec<String>,
    fields: Vec<Field>,
    ttl: Option<Ttl>,
    default_sort: Vec<SortKey>,
    /// False when the collection's writes are kept out of the change feed.
    change_feed: bool,
    /// The declared fields as a tree of path segments, built once by
    /// [`SchemaBuilder::build`] so that checking a document walks it once instead of
    /// splitting and resolving every declared path.
    #[serde(skip)]
    tree: Option<FieldTree>,
}

/// Builds a [`Schema`]; `build` checks it and panics on a malformed definition,
/// which happens once, at first use, with a message naming the mistake.
///
/// ```
/// use std::time::Duration;
/// use opstore_domain::{Field, FieldType, ScalarType, Schema, SortDir};
///
/// let schema = Schema::builder("health_events", "id")
///     .field(Field::new("healthevent", FieldType::Object))
///     .field(Field::new("healthevent.nodename", FieldType::String).indexed())
///     .field(Field::new("fingerprint", FieldType::String).unique())
///     .field(Field::new("tags", FieldType::List(ScalarType::String)))
///     .field(Field::new("details", FieldType::Json).optional())
///     .field(Field::new("created_at", FieldType::Timestamp).indexed())
///     .ttl("created_at", Duration::from_secs(7 * 24 * 3600))
///     .default_sort("created_at", SortDir::Desc)
///     .build();
///
/// assert_eq!(schema.key(), "id");
/// let indexed: Vec<&str> = schema.indexed_fields().map(|f| f.path()).collect();
/// assert_eq!(indexed, ["healthevent.nodename", "fingerprint", "created_at"]);
/// // Dotted paths resolve to their declared type; anything under a `Json` field is `Json`.
/// assert_eq!(schema.resolve("healthevent.nodename")?, FieldType::String);
/// assert_eq!(schema.resolve("details.gpu.uuid")?, FieldType::Json);
/// // An undeclared path is a validation error, long before any query text exists.
/// assert!(schema.resolve("healthevent.nodename; drop table").unwrap_err().is_validation());
/// assert!(schema.resolve("owner").unwrap_err().is_validation());
/// # Ok::<(), opstore_domain::StoreError>(())
/// ```
#[derive(Debug)]
pub struct SchemaBuilder {
    schema: Schema,
}

impl Schema {
    /// Starts a schema for collection `name` keyed by the string field `key`.
    pub fn builder(name: &str, key: &str) -> SchemaBuilder {
        SchemaBuilder {
            schema: Schema {
                name: name.to_owned(),
                key: key.to_owned(),
                partition_key: vec![key.to_owned()],
                clustering_key: Vec::new(),
                fields: vec![Field::new(key, FieldType::String)],
                ttl: None,
                default_sort: Vec::new(),
                change_feed: true,
                tree: None,
            },
        }
    }

    /// Collection / table name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Path of the key field (always a string).
    pub fn key(&self) -> &str {
        &self.key
    }
    /// Partition key columns (wide-column backends).
    pub fn partition_key(&self) -> &[String] {
        &self.partition_key
    }
    /// Clustering columns (wide-column backends).
    pub fn clustering_key(&self) -> &[String] {
        &self.clustering_key
    }
    /// Declared fields, key first.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }
    /// Document expiry, if any.
    pub fn ttl(&self) -> Option<&Ttl> {
        self.ttl.as_ref()
    }
    /// Sort applied when a query names none (the key breaks remaining ties).
    pub fn default_sort(&self) -> &[SortKey] {
        &self.default_sort
    }
    /// Whether the collection's writes reach the change feed (true unless the
    /// schema was built with [`SchemaBuilder::without_change_feed`]).
    pub fn has_change_feed(&self) -> bool {
        self.change_feed
    }
    /// Declared field at exactly `path`.
    pub fn field(&self, path: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.path == path)
    }
    /// Fields with a secondary index (the key excluded).
    pub fn indexed_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields
            .iter()
            .filter(|f| f.indexed && f.path != self.key)
    }

    /// Resolves a dotted path to the type it addresses.
    ///
    /// A path is valid when it is declared, or lies under a declared `Json` or `Map`
    /// field. Segments are ASCII letters, digits, `_` and `-`; nothing else can reach
    /// a query string.
    pub fn resolve(&self, path: &str) -> Result<FieldType> {
        check_path_syntax(&self.name, path)?;
        if let Some(field) = self.field(path) {
            return Ok(field.ty);
        }
        for (i, _) in path.match_indices('.').rev() {
            let parent = &path[..i];
            if let Some(field) = self.field(parent) {
                return match field.ty {
                    FieldType::Json => Ok(FieldType::Json),
                    FieldType::Map(s) if !path[i + 1..].contains('.') => Ok(scalar_field_type(s)),
                    _ => invalid(format!(
                        "unknown field path `{path}` in collection `{}`",
                        self.name
                    )),
                };
            }
        }
        invalid(format!(
            "unknown field path `{path}` in collection `{}`",
            self.name
        ))
    }

    /// Checks that a whole document matches the schema: an object, with a string key,
    /// every required field present, every declared field of its type.
    pub fn check_document(&self, doc: &Value) -> Result<()> {
        let Some(obj) = doc.as_object() else {
            return invalid(format!("document for `{}` is not an object", self.name));
        };
        let key = obj.get(&self.key).and_then(Value::as_str);
        let Some(key) = key else {
            return invalid(format!(
                "document for `{}` has no string key field `{}`",
                self.name, self.key
            ));
        };
        check_key(&self.name, key)?;
        if self.tree.as_ref().is_some_and(|t| t.accepts(obj)) {
            return Ok(());
        }
        // Rejected (or no tree): find the first offending field in declaration
        // order, so the error names the same field it always has.
        self.check_fields(doc, key)
    }

    /// The field-by-field form of the document check.
    fn check_fields(&self, doc: &Value, key: &str) -> Result<()> {
        for field in &self.fields {
            match crate::eval::get_path(doc, &field.path) {
                None if field.optional || self.parent_absent(doc, &field.path) => {}
                None => {
                    return invalid(format!(
                        "document `{key}` in `{}` lacks required field `{}`",
                        self.name, field.path
                    ));
                }
                Some(v) if !field.ty.accepts(v) => {
                    return invalid(format!(
                        "field `{}` of document `{key}` in `{}` expects {:?}, got {}",
                        field.path,
                        self.name,
                        field.ty,
                        type_name(v)
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// An optional ancestor object that is absent excuses its required children.
    fn parent_absent(&self, doc: &Value, path: &str) -> bool {
        path.match_indices('.').any(|(i, _)| {
            let parent = &path[..i];
            self.field(parent).is_some_and(|f| f.optional)
                && crate::eval::get_path(doc, parent).is_none()
        })
    }
}

fn scalar_field_type(s: ScalarType) -> FieldType {
    match s {
        ScalarType::String => FieldType::String,
        ScalarType::Int => FieldType::Int,
        ScalarType::Float => FieldType::Float,
        ScalarType::Bool => FieldType::Bool,
        ScalarType::Timestamp => FieldType::Timestamp,
    }
}

/// Name of a JSON value's type, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Largest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// Checks a document key: non-empty, at most [`MAX_KEY_LEN`] bytes, no control characters.
pub fn check_key(collection: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return invalid(format!("empty key in `{collection}`"));
    }
    if key.len() > MAX_KEY_LEN {
        return invalid(format!(
            "key in `{collection}` is {} bytes; at most {MAX_KEY_LEN} allowed",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return invalid(format!(
            "key in `{collection}` contains a control character"
        ));
    }
    Ok(())
}

/// Checks a name used as an identifier (collection, lock, processor): 1-128 ASCII
/// letters, digits, `_`, `-`, `.`, `:`, `/`.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        invalid(format!(
            "invalid {kind} name {name:?}: use 1-128 of [A-Za-z0-9_.:/-]"
        ))
    }
}

fn check_path_syntax(collection: &str, path: &str) -> Result<()> {
    let ok = !path.is_empty()
        && path.len() <= 256
        && path.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        invalid(format!(
            "malformed field path {path:?} for collection `{collection}`"
        ))
    }
}

impl SchemaBuilder {
    /// Declares a field.
    pub fn field(mut self, field: Field) -> Self {
        if field.path == self.schema.key {
            self.schema.fields[0] = Field {
                ty: FieldType::String,
                optional: false,
                ..field
            };
        } else {
            self.schema.fields.push(field);
        }
        self
    }

    /// Declares wide-column clustering columns (the key stays the partition key).
    pub fn clustering(mut self, columns: &[&str]) -> Self {
        self.schema.clustering_key = columns.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// Documents expire `after` the instant in timestamp field `field`.
    pub fn ttl(mut self, field: &str, after: Duration) -> Self {
        self.schema.ttl = Some(Ttl {
            field: field.to_owned(),
            after,
        });
        self
    }

    /// Sort used when a query names none.
    pub fn default_sort(mut self, path: &str, dir: SortDir) -> Self {
        self.schema.default_sort.push(SortKey {
            path: path.to_owned(),
            dir,
        });
        self
    }

    /// Keeps the collection's writes out of the change feed: watching it is a
    /// `Validation` error on every backend. For collections nobody watches and
    /// that are written often, such as job queues: on backends whose feed is a
    /// changelog written with each change (PostgreSQL, SQLite), every write then
    /// costs one row and no changelog row; on the others it only forbids watching.
    pub fn without_change_feed(mut self) -> Self {
        self.schema.change_feed = false;
        self
    }

    /// Finishes the schema.
    ///
    /// # Panics
    /// On a definition error (bad name, duplicate field, undeclared TTL or sort
    /// field, field under a non-object parent). Schemas are static program text, so
    /// this is a programming error, caught by the first test that touches the entity.
    pub fn build(self) -> Schema {
        match self.check() {
            Ok(()) => {
                let mut schema = self.schema;
                schema.tree = FieldTree::build(&schema.fields);
                schema
            }
            Err(e) => panic!("invalid schema `{}`: {e}", self.schema.name),
        }
    }

    fn check(&self) -> Result<()> {
        let s = &self.schema;
        check_name("collection", &s.name)?;
        if s.name.contains(['.', ':', '/', '-']) {
            return invalid("collection names use only [A-Za-z0-9_]");
        }
        for (i, f) in s.fields.iter().enumerate() {
            check_path_syntax(&s.name, &f.path)?;
            if s.fields[..i].iter().any(|g| g.path == f.path) {
                return invalid(format!("field `{}` declared twice", f.path));
            }
            if let Some((parent, _)) = f.path.rsplit_once('.') {
                match s.field(parent).map(Field::ty) {
                    Some(FieldType::Object) => {}
                    _ => {
                        return invalid(format!(
                            "parent `{parent}` of `{}` must be declared as Object",
                            f.path
                        ));
                    }
                }
            }
            if f.indexed && !f.ty.is_sortable() {
                return invalid(format!("indexed field `{}` must be a scalar", f.path));
            }
        }
        if let Some(ttl) = &s.ttl {
            if s.field(&ttl.field).map(Field::ty) != Some(FieldType::Timestamp) {
                return invalid(format!(
                    "TTL field `{}` must be a declared Timestamp",
                    ttl.field
                ));
            }
        }
        for key in s
            .default_sort
            .iter()
            .map(|k| &k.path)
            .chain(&s.clustering_key)
        {
            if !s.field(key).is_some_and(|f| f.ty.is_sortable()) {
                return invalid(format!(
                    "sort/clustering field `{key}` must be a declared scalar"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::builder("events", "id")
            .field(Field::new("meta", FieldType::Json).optional())
            .field(Field::new("status", FieldType::Object))
            .field(Field::new("status.state", FieldType::String).indexed())
            .field(Field::new("labels", FieldType::Map(ScalarType::String)).optional())
            .build()
    }

    #[test]
    fn resolves_declared_json_and_map_paths() {
        let s = schema();
        assert_eq!(s.resolve("status.state").unwrap(), FieldType::String);
        assert_eq!(s.resolve("meta.a.b").unwrap(), FieldType::Json);
        assert_eq!(s.resolve("labels.team").unwrap(), FieldType::String);
        assert!(s.resolve("labels.team.x").unwrap_err().is_validation());
        assert!(s.resolve("status.other").unwrap_err().is_validation());
        assert!(
            s.resolve("status.state'; drop table x")
                .unwrap_err()
                .is_validation()
        );
    }

    /// The one-pass check accepts exactly what the field-by-field check accepts,
    /// over every combination of absent, null, well-typed and ill-typed values.
    #[test]
    fn tree_check_agrees_with_field_by_field_check() {
        let s = Schema::builder("events", "id")
            .field(Field::new("status", FieldType::Object))
            .field(Field::new("status.state", FieldType::String))
            .field(Field::new("status.since", FieldType::Timestamp).optional())
            .field(Field::new("extra", FieldType::Object).optional())
            .field(Field::new("extra.code", FieldType::Int))
            .field(Field::new("extra.deep", FieldType::Object).optional())
            .field(Field::new("extra.deep.x", FieldType::Bool))
            .field(Field::new("tags", FieldType::Set(ScalarType::String)).optional())
            .build();
        let tree = s.tree.as_ref().expect("every parent is declared");
        // Parents before their children.
        let paths = [
            ("status", json!({})),
            ("status.state", json!("x")),
            ("status.since", json!("2026-01-02T03:04:05.000006Z")),
            ("extra", json!({})),
            ("extra.code", json!(3)),
            ("extra.deep", json!({})),
            ("extra.deep.x", json!(true)),
            ("tags", json!(["a", "b"])),
            ("undeclared", json!({"any": 1})),
        ];
        let mut accepted = 0;
        for mask in 0..4usize.pow(paths.len() as u32) {
            let mut doc = json!({"id": "a"});
            let mut m = mask;
            for (path, good) in &paths {
                // Absent, null, well typed or ill typed.
                let v = match m % 4 {
                    0 => None,
                    1 => Some(Value::Null),
                    2 => Some(good.clone()),
                    _ => Some(json!(7.5)),
                };
                m /= 4;
                let parent_holds = path.rsplit_once('.').is_none_or(|(p, _)| {
                    crate::eval::get_path(&doc, p).is_some_and(Value::is_object)
                });
                if let (Some(v), true) = (v, parent_holds) {
                    crate::eval::set_path(&mut doc, path, v);
                }
            }
            let slow = s.check_fields(&doc, "a").is_ok();
            assert_eq!(tree.accepts(doc.as_object().unwrap()), slow, "{doc}");
            assert_eq!(s.check_document(&doc).is_ok(), slow, "{doc}");
            accepted += usize::from(slow);
        }
        assert!(accepted > 1000, "{accepted}");
    }

    #[test]
    fn canonical_timestamps_have_one_shape() {
        assert!(is_canonical_timestamp("2026-01-02T03:04:05.000006Z"));
        for bad in [
            "2026-01-02T03:04:05.000006",
            "2026-01-02 03:04:05.000006Z",
            "2026/01-02T03:04:05.000006Z",
            "2026-01-02T03:04:05,000006Z",
            "2026-01-02T03:04:05.00000aZ",
            "2026-13-02T03:04:05.000006Z",
            "2026-01-02T24:04:05.000006Z",
            "2026-01-02T03:04:05.000006z",
        ] {
            assert!(!is_canonical_timestamp(bad), "{bad}");
        }
    }

    #[test]
    fn check_document_names_the_field() {
        let s = schema();
        let err = s
            .check_document(&serde_json::json!({"id": "a", "status": {"state": 3}}))
            .unwrap_err();
        assert!(err.to_string().contains("status.state"), "{err}");
        s.check_document(&serde_json::json!({"id": "a", "status": {"state": "x"}}))
            .unwrap();
    }
}
