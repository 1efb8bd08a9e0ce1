//! Index specifications generated from entity schemas.
//!
//! The same specs drive `migrate` and the checked-in `schema/indexes.json`, so
//! the file always shows what the adapter creates.

use opstore_domain::schema::FieldType;
use opstore_domain::{ScalarType, Schema};
use serde::Serialize;

use crate::translate::TTL_SHADOW;

/// One index of one collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexSpec {
    /// Collection name.
    pub collection: String,
    /// Index name (`opstore_<path>`).
    pub name: String,
    /// Indexed path (ascending).
    pub path: String,
    /// Unique among documents that hold a value.
    pub unique: bool,
    /// BSON types a unique index covers (`partialFilterExpression` with `$type`),
    /// so absent and null values never collide.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partial_types: Vec<&'static str>,
    /// Seconds after the indexed date when the TTL monitor deletes a document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_after_seconds: Option<u64>,
}

/// Every index a schema needs.
pub fn index_specs(schema: &Schema) -> Vec<IndexSpec> {
    let mut specs: Vec<IndexSpec> = schema
        .indexed_fields()
        .map(|f| IndexSpec {
            collection: schema.name().to_owned(),
            name: format!("opstore_{}", f.path()),
            path: f.path().to_owned(),
            unique: f.is_unique(),
            partial_types: if f.is_unique() {
                bson_types(f.ty())
            } else {
                Vec::new()
            },
            expire_after_seconds: None,
        })
        .collect();
    if let Some(ttl) = schema.ttl() {
        specs.push(IndexSpec {
            collection: schema.name().to_owned(),
            name: format!("opstore_ttl_{}", ttl.field),
            path: TTL_SHADOW.to_owned(),
            unique: false,
            partial_types: Vec::new(),
            expire_after_seconds: Some(ttl.after.as_secs()),
        });
    }
    specs
}

fn bson_types(ty: FieldType) -> Vec<&'static str> {
    match ty.scalar() {
        Some(ScalarType::String | ScalarType::Timestamp) => vec!["string"],
        Some(ScalarType::Int | ScalarType::Float) => vec!["int", "long", "double"],
        Some(ScalarType::Bool) => vec!["bool"],
        None => Vec::new(),
    }
}

/// The generated files, relative to this crate's directory.
pub fn generate(schemas: &[&Schema]) -> Vec<(String, String)> {
    let specs: Vec<IndexSpec> = schemas.iter().flat_map(|s| index_specs(s)).collect();
    let text = serde_json::to_string_pretty(&specs).unwrap_or_else(|_| "[]".to_owned());
    vec![("schema/indexes.json".to_owned(), format!("{text}\n"))]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask codegen` writes the file; this keeps it honest between runs
    /// (set `OPSTORE_BLESS=1` to rewrite it from here).
    #[test]
    fn checked_in_index_specs_are_fresh() {
        let files = generate(&opstore_domain::entities::all_schemas());
        for (path, text) in files {
            let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&path);
            if std::env::var_os("OPSTORE_BLESS").is_some() {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, &text).unwrap();
            }
            let on_disk = std::fs::read_to_string(&full).unwrap_or_default();
            assert!(
                on_disk == text,
                "{path} is stale: run `cargo xtask codegen`"
            );
        }
    }

    #[test]
    fn unique_indexes_skip_absent_values_and_ttl_uses_the_shadow_date() {
        let specs = index_specs(opstore_domain::entities::dead_letter::DeadLetter::schema_ref());
        assert!(
            specs
                .iter()
                .all(|s| !s.unique && s.expire_after_seconds.is_none()),
            "{specs:?}"
        );
        assert!(specs.iter().any(|s| s.path == "processor"));
    }
}
