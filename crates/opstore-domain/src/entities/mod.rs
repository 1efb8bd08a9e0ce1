//! The entities of the systems opstore serves, and opstore's own.

pub mod dead_letter;

use crate::schema::Schema;

/// Every entity schema defined here, for migrations and code generation.
pub fn all_schemas() -> Vec<&'static Schema> {
    vec![dead_letter::DeadLetter::schema_ref()]
}
