//! DDL generated from entity schemas, and the adapter's own tables.
//!
//! One table per entity: the key as `TEXT PRIMARY KEY`, the document as JSON
//! text in `doc`, `opstore_expires_at` (microseconds since the epoch) for
//! entities with a TTL, and one virtual generated column per declared indexed
//! scalar field, named by its path and computed with `json_extract`, with an
//! index (unique for unique fields). Unique indexes ignore NULL, so absent
//! values never collide.

use opstore_domain::{FieldType, Schema};

use crate::translate::json_path;

/// Version name of the adapter's own tables in `opstore_migrations`.
pub const CORE_VERSION: &str = "0001_opstore_core";

/// The adapter's own tables: changelog, feed state, leases, idempotency keys,
/// checkpoints.
pub const CORE_DDL: &str = "\
CREATE TABLE IF NOT EXISTS opstore_changelog (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    op TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS opstore_changelog__collection ON opstore_changelog (collection, id);
CREATE INDEX IF NOT EXISTS opstore_changelog__at ON opstore_changelog (at);
CREATE TABLE IF NOT EXISTS opstore_feed_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    purged_through INTEGER NOT NULL
);
INSERT OR IGNORE INTO opstore_feed_state (id, purged_through) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS opstore_leases (
    name TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS opstore_idempotency (
    key TEXT PRIMARY KEY NOT NULL,
    fingerprint TEXT NOT NULL,
    completed INTEGER NOT NULL,
    response TEXT,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS opstore_checkpoints (
    processor TEXT PRIMARY KEY NOT NULL,
    token TEXT NOT NULL
);
";

/// Column holding the expiry of a document of an entity with a TTL.
pub const EXPIRES: &str = "opstore_expires_at";

/// Quotes an identifier built from schema declarations (checked ASCII paths).
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The declared field path with a generated column, when `path` has one.
pub(crate) fn column(schema: &'static Schema, path: &str) -> Option<&'static str> {
    schema
        .indexed_fields()
        .find(|f| f.path() == path && sql_type(f.ty()).is_some())
        .map(|f| f.path())
}

/// The column type of a scalar field; `None` for fields without a column.
fn sql_type(ty: FieldType) -> Option<&'static str> {
    match ty {
        FieldType::String | FieldType::Timestamp => Some("TEXT"),
        FieldType::Int | FieldType::Bool => Some("INTEGER"),
        FieldType::Float => Some("REAL"),
        _ => None,
    }
}

/// The generated column definitions of an entity: `(name, definition)`.
pub fn generated_columns(schema: &Schema) -> Vec<(String, String)> {
    schema
        .indexed_fields()
        .filter_map(|f| {
            let ty = sql_type(f.ty())?;
            let def = format!(
                "{} {ty} GENERATED ALWAYS AS (json_extract(doc, '{}')) VIRTUAL",
                quote(f.path()),
                json_path(f.path())
            );
            Some((f.path().to_owned(), def))
        })
        .collect()
}

/// The index statements of an entity.
pub fn index_ddl(schema: &Schema) -> Vec<String> {
    let table = quote(schema.name());
    let mut out = Vec::new();
    for f in schema.indexed_fields() {
        if sql_type(f.ty()).is_none() {
            continue;
        }
        let (kind, suffix) = if f.is_unique() {
            ("UNIQUE INDEX", "key")
        } else {
            ("INDEX", "idx")
        };
        let name = quote(&format!("{}__{}__{suffix}", schema.name(), f.path()));
        out.push(format!(
            "CREATE {kind} IF NOT EXISTS {name} ON {table} ({})",
            quote(f.path())
        ));
    }
    if schema.ttl().is_some() {
        let name = quote(&format!("{}__{EXPIRES}", schema.name()));
        out.push(format!(
            "CREATE INDEX IF NOT EXISTS {name} ON {table} ({EXPIRES}) WHERE {EXPIRES} IS NOT NULL"
        ));
    }
    out
}

/// The complete DDL of an entity's table and indexes.
pub fn entity_ddl(schema: &Schema) -> String {
    let mut cols = vec![
        format!("{} TEXT PRIMARY KEY NOT NULL", quote(schema.key())),
        "doc TEXT NOT NULL".to_owned(),
        format!("{EXPIRES} INTEGER"),
    ];
    cols.extend(generated_columns(schema).into_iter().map(|(_, d)| d));
    let mut ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    {}\n);\n",
        quote(schema.name()),
        cols.join(",\n    ")
    );
    for stmt in index_ddl(schema) {
        ddl.push_str(&stmt);
        ddl.push_str(";\n");
    }
    ddl
}

/// The DDL of every schema, for reading (the adapter applies it with `migrate`).
pub fn all_ddl(schemas: &[&'static Schema]) -> String {
    let mut out = String::from(CORE_DDL);
    for s in schemas {
        out.push('\n');
        out.push_str(&entity_ddl(s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::Field;
    use std::sync::LazyLock;
    use std::time::Duration;

    static S: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("items", "id")
            .field(Field::new("status", FieldType::Object))
            .field(Field::new("status.state", FieldType::String).indexed())
            .field(Field::new("email", FieldType::String).unique())
            .field(Field::new("at", FieldType::Timestamp).indexed())
            .ttl("at", Duration::from_secs(60))
            .build()
    });

    #[test]
    fn indexed_fields_become_generated_columns_with_indexes() {
        let ddl = entity_ddl(&S);
        assert!(ddl.contains("\"id\" TEXT PRIMARY KEY NOT NULL"), "{ddl}");
        assert!(
            ddl.contains(
                "\"status.state\" TEXT GENERATED ALWAYS AS (json_extract(doc, '$.\"status\".\"state\"')) VIRTUAL"
            ),
            "{ddl}"
        );
        assert!(
            ddl.contains(
                "CREATE UNIQUE INDEX IF NOT EXISTS \"items__email__key\" ON \"items\" (\"email\")"
            ),
            "{ddl}"
        );
        assert!(
            ddl.contains("WHERE opstore_expires_at IS NOT NULL"),
            "{ddl}"
        );
    }
}
