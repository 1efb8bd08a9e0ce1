//! CQL schema from entity schemas: the keyspace, a table per entity with its
//! primary key, typed columns, secondary indexes, default TTL and CDC, plus
//! lookup tables for unique fields and the adapter's own tables.
//!
//! `migrate` applies exactly these statements; `cargo xtask codegen` writes them
//! to `crates/opstore-scylla/schema/keyspace.cql` with the default options.

use opstore_domain::Schema;

use crate::config::Replication;
use crate::flavour::Flavour;
use crate::table::{Column, DOC, LAST_OP, TableLayout, cql_type, quote, sanitize};

/// Lease table (fencing counter without TTL, holder cells with TTL).
pub const LEASES: &str = "opstore_leases";
/// Idempotency records.
pub const IDEMPOTENCY: &str = "opstore_idempotency";
/// Processor checkpoints.
pub const CHECKPOINTS: &str = "opstore_checkpoints";

/// What kind of object a DDL step creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlKind {
    /// The keyspace.
    Keyspace,
    /// A table.
    Table,
    /// A secondary index.
    Index,
}

/// One schema statement and the object it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlStep {
    /// Kind of object.
    pub kind: DdlKind,
    /// Object name (keyspace, table or index).
    pub name: String,
    /// `CREATE ... IF NOT EXISTS` statement.
    pub cql: String,
    /// For tables: `(quoted column, CQL type)` of every column, so `migrate`
    /// can add the ones an older table lacks.
    pub columns: Vec<(String, String)>,
}

/// Keyspace-level choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlOptions {
    /// Keyspace name.
    pub keyspace: String,
    /// Keyspace replication.
    pub replication: Replication,
    /// The server the statements are for.
    pub flavour: Flavour,
    /// `Some(enabled)` writes the `tablets` option (ScyllaDB 6+; never on Cassandra).
    pub tablets: Option<bool>,
    /// CDC log TTL in seconds (the change feed's retention).
    pub cdc_ttl_secs: u64,
}

impl DdlOptions {
    /// The options of the checked-in schema file.
    pub fn checked_in() -> Self {
        DdlOptions {
            keyspace: "opstore".into(),
            replication: Replication::NetworkTopology {
                factors: vec![("replication_factor".into(), 3)],
            },
            flavour: Flavour::Scylla,
            tablets: Some(false),
            cdc_ttl_secs: 86_400,
        }
    }
}

/// Table holding the unique claims of one unique field.
pub fn unique_table(schema: &Schema, path: &str) -> String {
    let name = format!("{}_uq_{}", schema.name(), sanitize(path));
    if name.len() <= 48 {
        return name;
    }
    // Table names are limited to 48 characters; keep a stable hash of the rest.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!(
        "{}_uq_{hash:016x}",
        &schema.name()[..schema.name().len().min(28)]
    )
}

/// Index name of an indexed field.
pub fn index_name(schema: &Schema, path: &str) -> String {
    format!("{}_{}_idx", schema.name(), sanitize(path))
}

/// Every statement `migrate` runs, in order.
pub fn ddl(options: &DdlOptions, schemas: &[&'static Schema]) -> Vec<DdlStep> {
    let ks = &options.keyspace;
    let mut steps = Vec::new();
    let tablets = match options.tablets {
        Some(on) if options.flavour.has_tablets() => format!(" AND tablets = {{'enabled': {on}}}"),
        _ => String::new(),
    };
    steps.push(DdlStep {
        kind: DdlKind::Keyspace,
        name: ks.clone(),
        cql: format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}{tablets}",
            options.replication.to_cql()
        ),
        columns: Vec::new(),
    });
    for schema in schemas {
        let layout = TableLayout::new(ks, schema);
        // A collection kept out of the feed pays no CDC log writes.
        let cdc_ttl_secs = (options.flavour.has_cdc_log() && schema.has_change_feed())
            .then_some(options.cdc_ttl_secs);
        steps.push(entity_table(&layout, cdc_ttl_secs));
        for field in schema.indexed_fields() {
            if layout.column(field.path()).is_none() {
                continue;
            }
            let name = index_name(schema, field.path());
            steps.push(DdlStep {
                kind: DdlKind::Index,
                cql: format!(
                    "CREATE INDEX IF NOT EXISTS {name} ON {} ({})",
                    layout.qualified(),
                    quote(field.path())
                ),
                name,
                columns: Vec::new(),
            });
        }
        for field in schema.fields().iter().filter(|f| f.is_unique()) {
            if field.path() == schema.key() {
                continue;
            }
            let name = unique_table(schema, field.path());
            steps.push(plain_table(
                ks,
                &name,
                &[("\"value\"", "text"), ("\"key\"", "text")],
                "\"value\"",
            ));
        }
    }
    steps.push(plain_table(
        ks,
        LEASES,
        &[
            ("name", "text"),
            ("fence", "bigint"),
            ("owner", "text"),
            ("\"token\"", "bigint"),
            ("expires_at", "timestamp"),
        ],
        "name",
    ));
    steps.push(plain_table(
        ks,
        IDEMPOTENCY,
        &[
            ("\"key\"", "text"),
            ("fingerprint", "text"),
            ("response", "text"),
            ("expires_at", "timestamp"),
        ],
        "\"key\"",
    ));
    steps.push(plain_table(
        ks,
        CHECKPOINTS,
        &[
            ("processor", "text"),
            ("\"token\"", "blob"),
            ("saved_at", "timestamp"),
        ],
        "processor",
    ));
    steps
}

/// The entity table; `cdc_ttl_secs` is `None` where the server has no CDC log
/// the feed could read.
fn entity_table(layout: &TableLayout, cdc_ttl_secs: Option<u64>) -> DdlStep {
    let schema = layout.schema;
    let mut columns: Vec<(String, String)> = layout
        .columns
        .iter()
        .map(|c: &Column| (c.ident(), cql_type(c.ty).unwrap_or_else(|| "text".into())))
        .collect();
    columns.push((DOC.into(), "text".into()));
    columns.push((LAST_OP.into(), "text".into()));
    let mut pk = format!("({})", quote(schema.key()));
    for c in schema.clustering_key() {
        pk.push_str(", ");
        pk.push_str(&quote(c));
    }
    let body: Vec<String> = columns
        .iter()
        .map(|(c, t)| format!("    {c} {t}"))
        .chain([format!("    PRIMARY KEY ({pk})")])
        .collect();
    let mut options = Vec::new();
    if let Some(cdc_ttl_secs) = cdc_ttl_secs {
        options.push(format!(
            "cdc = {{'enabled': true, 'preimage': false, 'postimage': false, 'ttl': {cdc_ttl_secs}}}"
        ));
    }
    if let Some(ttl) = schema.ttl() {
        options.push(format!(
            "default_time_to_live = {}",
            ttl.after.as_secs().max(1)
        ));
    }
    let order: Vec<String> = schema
        .clustering_key()
        .iter()
        .map(|c| format!("{} ASC", quote(c)))
        .collect();
    if !order.is_empty() {
        options.push(format!("CLUSTERING ORDER BY ({})", order.join(", ")));
    }
    let with = if options.is_empty() {
        String::new()
    } else {
        format!(" WITH {}", options.join("\n  AND "))
    };
    DdlStep {
        kind: DdlKind::Table,
        name: schema.name().to_owned(),
        cql: format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{}\n){with}",
            layout.qualified(),
            body.join(",\n"),
        ),
        columns,
    }
}

fn plain_table(ks: &str, name: &str, columns: &[(&str, &str)], pk: &str) -> DdlStep {
    let body: Vec<String> = columns
        .iter()
        .map(|(c, t)| format!("    {c} {t}"))
        .chain([format!("    PRIMARY KEY ({pk})")])
        .collect();
    DdlStep {
        kind: DdlKind::Table,
        name: name.to_owned(),
        cql: format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{name} (\n{}\n)",
            body.join(",\n")
        ),
        columns: columns
            .iter()
            .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
            .collect(),
    }
}

/// The generated files, relative to the crate directory: `schema/keyspace.cql`.
pub fn generate(schemas: &[&'static Schema]) -> Vec<(String, String)> {
    let options = DdlOptions::checked_in();
    let mut text = String::from(
        "-- Generated by `cargo xtask codegen` from the entity schemas; do not edit.\n\
         -- `ScyllaStore::migrate` applies the same statements with the configured\n\
         -- keyspace, replication and tablets option, then waits for schema agreement.\n",
    );
    for step in ddl(&options, schemas) {
        text.push('\n');
        text.push_str(&step.cql);
        text.push_str(";\n");
    }
    vec![("schema/keyspace.cql".to_owned(), text)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::{Field, FieldType, ScalarType, SortDir};
    use std::sync::LazyLock;
    use std::time::Duration;

    static EVENTS: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("events", "id")
            .field(Field::new("node", FieldType::String).indexed())
            .field(Field::new("seq", FieldType::Int))
            .field(Field::new("at", FieldType::Timestamp).indexed())
            .field(Field::new("sku", FieldType::String).unique().optional())
            .field(Field::new("tags", FieldType::Set(ScalarType::String)))
            .field(Field::new("labels", FieldType::Map(ScalarType::String)))
            .field(Field::new("meta", FieldType::Json).optional())
            .clustering(&["seq"])
            .ttl("at", Duration::from_secs(3600))
            .default_sort("seq", SortDir::Asc)
            .build()
    });

    #[test]
    fn entity_table_has_keys_types_cdc_and_ttl() {
        let steps = ddl(&DdlOptions::checked_in(), &[&EVENTS]);
        let table = steps.iter().find(|s| s.name == "events").unwrap();
        assert_eq!(
            table.cql,
            "CREATE TABLE IF NOT EXISTS opstore.events (\n    \"id\" text,\n    \"seq\" bigint,\n    \
             \"node\" text,\n    \"at\" timestamp,\n    \"sku\" text,\n    \"tags\" set<text>,\n    \
             \"labels\" map<text, text>,\n    doc text,\n    last_op text,\n    \
             PRIMARY KEY ((\"id\"), \"seq\")\n) WITH cdc = {'enabled': true, 'preimage': false, \
             'postimage': false, 'ttl': 86400}\n  AND default_time_to_live = 3600\n  \
             AND CLUSTERING ORDER BY (\"seq\" ASC)"
        );
        assert!(!table.cql.contains("meta"), "Json lives in doc only");
    }

    #[test]
    fn keyspace_indexes_unique_and_adapter_tables() {
        let steps = ddl(&DdlOptions::checked_in(), &[&EVENTS]);
        assert_eq!(
            steps[0].cql,
            "CREATE KEYSPACE IF NOT EXISTS opstore WITH replication = {'class': \
             'NetworkTopologyStrategy', 'replication_factor': 3} AND tablets = {'enabled': false}"
        );
        let cql: Vec<&str> = steps.iter().map(|s| s.cql.as_str()).collect();
        assert!(
            cql.contains(
                &"CREATE INDEX IF NOT EXISTS events_node_idx ON opstore.events (\"node\")"
            )
        );
        assert!(
            cql.contains(&"CREATE INDEX IF NOT EXISTS events_at_idx ON opstore.events (\"at\")")
        );
        assert!(
            cql.contains(&"CREATE INDEX IF NOT EXISTS events_sku_idx ON opstore.events (\"sku\")")
        );
        assert!(cql.iter().any(|c| c.starts_with(
            "CREATE TABLE IF NOT EXISTS opstore.events_uq_sku (\n    \"value\" text,\n    \"key\" text"
        )));
        for t in [LEASES, IDEMPOTENCY, CHECKPOINTS] {
            assert!(
                steps
                    .iter()
                    .any(|s| s.name == t && s.kind == DdlKind::Table)
            );
        }
        let leases = steps.iter().find(|s| s.name == LEASES).unwrap();
        assert!(leases.cql.contains("fence bigint"));
    }

    #[test]
    fn simple_replication_and_no_tablets_option() {
        let options = DdlOptions {
            keyspace: "t1".into(),
            replication: Replication::Simple { factor: 1 },
            flavour: Flavour::Scylla,
            tablets: None,
            cdc_ttl_secs: 60,
        };
        let steps = ddl(&options, &[]);
        assert_eq!(
            steps[0].cql,
            "CREATE KEYSPACE IF NOT EXISTS t1 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        assert_eq!(steps.len(), 4);
    }

    #[test]
    fn cassandra_gets_neither_tablets_nor_cdc() {
        let options = DdlOptions {
            keyspace: "t1".into(),
            replication: Replication::Simple { factor: 1 },
            flavour: Flavour::Cassandra,
            tablets: Some(false),
            cdc_ttl_secs: 60,
        };
        let steps = ddl(&options, &[&EVENTS]);
        assert_eq!(
            steps[0].cql,
            "CREATE KEYSPACE IF NOT EXISTS t1 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        let table = steps.iter().find(|s| s.name == "events").unwrap();
        assert!(!table.cql.contains("cdc"), "{}", table.cql);
        assert!(
            table.cql.contains(") WITH default_time_to_live = 3600"),
            "{}",
            table.cql
        );
    }

    #[test]
    fn generate_writes_one_file_with_every_statement() {
        let files = generate(&[&EVENTS]);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "schema/keyspace.cql");
        assert!(files[0].1.starts_with("-- Generated"));
        assert_eq!(
            files[0].1.matches(";\n").count(),
            ddl(&DdlOptions::checked_in(), &[&EVENTS]).len()
        );
    }

    #[test]
    fn long_unique_table_names_are_hashed_to_48_chars() {
        static LONG: LazyLock<Schema> = LazyLock::new(|| {
            Schema::builder("a_rather_long_collection_name_here", "id")
                .field(Field::new("another_long_unique_field", FieldType::String).unique())
                .build()
        });
        let name = unique_table(&LONG, "another_long_unique_field");
        assert!(name.len() <= 48, "{name}");
        assert_eq!(name, unique_table(&LONG, "another_long_unique_field"));
    }
}
