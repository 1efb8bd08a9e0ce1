//! DDL generated from entity schemas, and the adapter's own tables.
//!
//! Layout of an entity table (readable with plain SQL): the full document in
//! `doc jsonb`; the key and every declared indexed field as a typed, stored
//! generated column named by its dotted path (`"status.state"`), so the typed
//! columns can never disagree with the document; a B-tree index per indexed
//! field; a unique index per unique field. Identifiers come from the schema,
//! whose names and paths are restricted to `[A-Za-z0-9_.-]`.

use opstore_domain::{FieldType, Schema};

/// Version name of the adapter's own tables and functions.
pub const CORE_VERSION: &str = "0001_opstore_core";

/// Longest identifier PostgreSQL keeps.
const MAX_IDENT: usize = 63;

/// A typed column backing a field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Column {
    pub ty: FieldType,
}

/// `"ident"`; callers pass schema-validated names only.
pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The typed column of `path`, when the schema gives it one (the key and
/// indexed scalar fields whose path fits in an identifier).
pub(crate) fn column(schema: &Schema, path: &str) -> Option<Column> {
    let field = schema.field(path)?;
    let typed = path == schema.key() || field.is_indexed();
    (typed && path.len() <= MAX_IDENT && field.ty().is_sortable())
        .then_some(Column { ty: field.ty() })
}

fn sql_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "text COLLATE \"C\"",
        FieldType::Int => "bigint",
        FieldType::Float => "double precision",
        FieldType::Bool => "boolean",
        FieldType::Timestamp => "timestamptz",
        _ => "jsonb",
    }
}

/// `doc -> 'a' ->> 'b'` for a schema path (literal segments from the schema).
fn text_path(path: &str) -> String {
    let segs: Vec<&str> = path.split('.').collect();
    let mut out = String::from("doc");
    for (i, seg) in segs.iter().enumerate() {
        let arrow = if i + 1 == segs.len() { "->>" } else { "->" };
        out.push_str(&format!(" {arrow} '{seg}'"));
    }
    out
}

fn generated_expr(path: &str, ty: FieldType) -> String {
    let text = text_path(path);
    match ty {
        FieldType::String => format!("({text})"),
        FieldType::Int => format!("(({text})::bigint)"),
        FieldType::Float => format!("(({text})::double precision)"),
        FieldType::Bool => format!("(({text})::boolean)"),
        FieldType::Timestamp => format!("opstore_ts({text})"),
        _ => format!("({text})"),
    }
}

/// A deterministic 32-bit FNV-1a hash, to shorten over-long identifiers.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn index_name(table: &str, path: &str, suffix: &str) -> String {
    let name = format!("{table}__{}__{suffix}", path.replace(['.', '-'], "_"));
    if name.len() <= MAX_IDENT {
        return name;
    }
    let keep: String = name.chars().take(MAX_IDENT - 10).collect();
    format!("{keep}_{:08x}", fnv(&name))
}

/// Name of the unique index on `path` (errors map it back to the field).
pub(crate) fn unique_index_name(schema: &Schema, path: &str) -> String {
    index_name(schema.name(), path, "key")
}

/// Version name of an entity's DDL; changes when the DDL changes.
pub fn entity_version(schema: &Schema) -> String {
    format!("entity_{}_{:08x}", schema.name(), fnv(&entity_ddl(schema)))
}

/// The DDL of one entity table. Every statement is idempotent.
pub fn entity_ddl(schema: &Schema) -> String {
    let table = schema.name();
    let t = quote(table);
    let key = schema.key();
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {t} (\n    doc jsonb NOT NULL,\n    {} {} GENERATED ALWAYS AS ({}) STORED NOT NULL,\n    CONSTRAINT {} PRIMARY KEY ({})\n);\n",
        quote(key),
        sql_type(FieldType::String),
        generated_expr(key, FieldType::String),
        quote(&format!("{table}_pkey")),
        quote(key),
    );
    // Indexes keep absent values first, the order ascending sorts ask for (and,
    // scanned backwards, the order of descending sorts).
    for field in schema.indexed_fields() {
        let path = field.path();
        if column(schema, path).is_none() {
            continue;
        }
        sql.push_str(&format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {} {} GENERATED ALWAYS AS ({}) STORED;\n",
            quote(path),
            sql_type(field.ty()),
            generated_expr(path, field.ty()),
        ));
        if field.is_unique() {
            sql.push_str(&format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {t} ({} ASC NULLS FIRST);\n",
                quote(&unique_index_name(schema, path)),
                quote(path)
            ));
        } else {
            sql.push_str(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} ({} ASC NULLS FIRST);\n",
                quote(&index_name(table, path, "idx")),
                quote(path)
            ));
        }
    }
    let key_arg = key.replace('\'', "");
    for (event, func, rows) in [
        ("INSERT", "opstore_feed_ins", "NEW TABLE AS new_rows"),
        ("UPDATE", "opstore_feed_upd", "NEW TABLE AS new_rows"),
        ("DELETE", "opstore_feed_del", "OLD TABLE AS old_rows"),
    ] {
        let trigger = quote(&index_name(table, event, "feed").to_lowercase());
        // A collection kept out of the feed has no triggers, so its writes cost
        // one row each; dropping them also covers a table migrated before.
        if !schema.has_change_feed() {
            sql.push_str(&format!("DROP TRIGGER IF EXISTS {trigger} ON {t};\n"));
            continue;
        }
        sql.push_str(&format!(
            "CREATE OR REPLACE TRIGGER {trigger} AFTER {event} ON {t} REFERENCING {rows} FOR EACH STATEMENT EXECUTE FUNCTION {func}('{key_arg}');\n"
        ));
    }
    sql
}

/// The adapter's own functions and tables: changelog, commit order, leases,
/// idempotency keys, checkpoints. Every statement is idempotent.
pub const CORE_DDL: &str = r#"-- Timestamps are stored in their canonical RFC 3339 text form ending in `Z`,
-- whose parse does not depend on session settings, so the cast is immutable here.
CREATE OR REPLACE FUNCTION opstore_ts(t text) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT t::timestamptz $$;

-- The value at a path, descending through objects only (as the portable model does).
CREATE OR REPLACE FUNCTION opstore_get(d jsonb, p text[]) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY p LOOP
        IF d IS NULL OR jsonb_typeof(d) <> 'object' THEN RETURN NULL; END IF;
        d := d -> s;
    END LOOP;
    IF d = 'null'::jsonb THEN RETURN NULL; END IF;
    RETURN d;
END $$;

-- Sets a path, creating (or replacing non-object) parents.
CREATE OR REPLACE FUNCTION opstore_set(d jsonb, p text[], v jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF d IS NULL OR jsonb_typeof(d) <> 'object' THEN d := '{}'::jsonb; END IF;
    IF cardinality(p) = 1 THEN RETURN d || jsonb_build_object(p[1], v); END IF;
    RETURN d || jsonb_build_object(p[1], opstore_set(d -> p[1], p[2:], v));
END $$;

-- Removes a path when every parent is an object.
CREATE OR REPLACE FUNCTION opstore_unset(d jsonb, p text[]) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF d IS NULL OR jsonb_typeof(d) <> 'object' THEN RETURN d; END IF;
    IF cardinality(p) = 1 THEN RETURN d - p[1]; END IF;
    IF jsonb_typeof(d -> p[1]) IS DISTINCT FROM 'object' THEN RETURN d; END IF;
    RETURN d || jsonb_build_object(p[1], opstore_unset(d -> p[1], p[2:]));
END $$;

-- A float as JSON, keeping a fraction on integral values so it reads back as a float.
CREATE OR REPLACE FUNCTION opstore_float(x double precision) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN x = trunc(x) AND abs(x) < 1e15 THEN (x::text || '.0')::jsonb ELSE to_jsonb(x) END $$;

-- Adds to a number (absent or non-number counts as 0): an integer while both
-- operands are integers and the sum fits in 64 bits, else a float.
CREATE OR REPLACE FUNCTION opstore_inc(d jsonb, p text[], by jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    cur jsonb := opstore_get(d, p);
    s numeric;
BEGIN
    IF cur IS NULL OR jsonb_typeof(cur) <> 'number' THEN cur := '0'::jsonb; END IF;
    IF cur::text !~ '[.eE]' AND by::text !~ '[.eE]'
        AND cur::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
        s := cur::numeric + by::numeric;
        IF s BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
            RETURN opstore_set(d, p, to_jsonb(s));
        END IF;
    END IF;
    RETURN opstore_set(d, p, opstore_float(cur::text::double precision + by::text::double precision));
END $$;

-- Appends to a list (absent or non-list becomes a new list); a set skips a value it holds.
CREATE OR REPLACE FUNCTION opstore_push(d jsonb, p text[], v jsonb, dedup boolean) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE cur jsonb := opstore_get(d, p);
BEGIN
    IF cur IS NULL OR jsonb_typeof(cur) <> 'array' THEN cur := '[]'::jsonb; END IF;
    IF dedup AND cur @> jsonb_build_array(v) THEN RETURN opstore_set(d, p, cur); END IF;
    RETURN opstore_set(d, p, cur || jsonb_build_array(v));
END $$;

CREATE TABLE IF NOT EXISTS opstore_migrations (
    version text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Change feed. Entity triggers append to the changelog in the writing
-- transaction and register the transaction in opstore_commits. At commit a
-- deferred trigger draws the commit sequence number, so numbers follow commit
-- order (a transaction that waited for another's row lock commits after it and
-- draws a larger number). No lock is held across the commit, so concurrent
-- commits share WAL flushes; a number can therefore become visible after a
-- larger one, and readers stop at such a gap until the transactions that were
-- running when they saw it have finished (see the adapter's feed module). The
-- sequence must not cache values per session (CACHE 1), or numbers would not
-- follow commit order across sessions.
CREATE SEQUENCE IF NOT EXISTS opstore_commit_seq CACHE 1;

CREATE TABLE IF NOT EXISTS opstore_commits (
    xid xid8 PRIMARY KEY,
    seq bigint UNIQUE,
    committed_at timestamptz
);
CREATE INDEX IF NOT EXISTS opstore_commits_committed_at ON opstore_commits (committed_at);

CREATE TABLE IF NOT EXISTS opstore_changelog (
    id bigserial PRIMARY KEY,
    xid xid8 NOT NULL,
    collection text NOT NULL,
    op text NOT NULL,
    key text NOT NULL,
    doc jsonb
);
CREATE INDEX IF NOT EXISTS opstore_changelog_xid ON opstore_changelog (xid, id);

CREATE TABLE IF NOT EXISTS opstore_feed_state (
    id int PRIMARY KEY CHECK (id = 1),
    purged_through bigint NOT NULL
);
INSERT INTO opstore_feed_state (id, purged_through) VALUES (1, 0) ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION opstore_feed_mark() RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    x xid8 := pg_current_xact_id();
    g text := 'opstore.feed_' || current_schema();
BEGIN
    IF current_setting(g, true) IS DISTINCT FROM x::text THEN
        INSERT INTO opstore_commits (xid) VALUES (x) ON CONFLICT DO NOTHING;
        PERFORM set_config(g, x::text, true);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION opstore_feed_ins() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_variable
DECLARE n bigint;
BEGIN
    INSERT INTO opstore_changelog (xid, collection, op, key, doc)
        SELECT pg_current_xact_id(), TG_TABLE_NAME, 'insert', r.doc #>> string_to_array(TG_ARGV[0], '.'), r.doc
        FROM new_rows r;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN PERFORM opstore_feed_mark(); END IF;
    RETURN NULL;
END $$;

-- Entity fields become columns of the transition tables, so the trigger
-- functions resolve a clash with their own variables (`n`, `kind`) to the variable.
-- A replace marks itself with the transaction-local setting `opstore.op`,
-- consumed here so later statements report plain updates.
CREATE OR REPLACE FUNCTION opstore_feed_upd() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_variable
DECLARE
    n bigint;
    kind text := CASE WHEN current_setting('opstore.op', true) = 'replace' THEN 'replace' ELSE 'update' END;
BEGIN
    PERFORM set_config('opstore.op', '', true);
    INSERT INTO opstore_changelog (xid, collection, op, key, doc)
        SELECT pg_current_xact_id(), TG_TABLE_NAME, kind, r.doc #>> string_to_array(TG_ARGV[0], '.'), r.doc
        FROM new_rows r;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN PERFORM opstore_feed_mark(); END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION opstore_feed_del() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_variable
DECLARE n bigint;
BEGIN
    INSERT INTO opstore_changelog (xid, collection, op, key, doc)
        SELECT pg_current_xact_id(), TG_TABLE_NAME, 'delete', r.doc #>> string_to_array(TG_ARGV[0], '.'), NULL
        FROM old_rows r;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN PERFORM opstore_feed_mark(); END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION opstore_feed_commit() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE opstore_commits SET seq = nextval('opstore_commit_seq'), committed_at = clock_timestamp()
        WHERE xid = NEW.xid;
    -- PostgreSQL makes each commit that notifies wait for the previous one's
    -- WAL flush. So a commit notifies only while no other commit of this schema
    -- that notifies is in flight; that one's notification wakes the readers,
    -- who also look again shortly after every fetch that found commits.
    IF pg_try_advisory_xact_lock(1869640564, hashtext(current_schema())) THEN
        PERFORM pg_notify('opstore_feed_' || current_schema(), '');
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS opstore_feed_commit ON opstore_commits;
CREATE CONSTRAINT TRIGGER opstore_feed_commit AFTER INSERT ON opstore_commits
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION opstore_feed_commit();

-- Leases: one row per held name; fencing tokens come from one sequence.
CREATE SEQUENCE IF NOT EXISTS opstore_lease_token_seq;
CREATE TABLE IF NOT EXISTS opstore_leases (
    name text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    token bigint NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS opstore_idempotency (
    key text PRIMARY KEY,
    fingerprint text NOT NULL,
    completed boolean NOT NULL DEFAULT false,
    response jsonb,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS opstore_idempotency_expires_at ON opstore_idempotency (expires_at);

CREATE TABLE IF NOT EXISTS opstore_checkpoints (
    processor text PRIMARY KEY,
    token bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::{Field, FieldType};

    #[test]
    fn indexed_fields_become_generated_columns() {
        let s = Schema::builder("things", "id")
            .field(Field::new("status", FieldType::Object))
            .field(Field::new("status.state", FieldType::String).indexed())
            .field(Field::new("sku", FieldType::String).unique().optional())
            .field(Field::new("n", FieldType::Int))
            .build();
        let ddl = entity_ddl(&s);
        assert!(ddl.contains("\"status.state\" text COLLATE \"C\" GENERATED ALWAYS AS ((doc -> 'status' ->> 'state'))"), "{ddl}");
        assert!(
            ddl.contains("CREATE UNIQUE INDEX IF NOT EXISTS \"things__sku__key\""),
            "{ddl}"
        );
        assert!(!ddl.contains("\"n\""), "{ddl}");
        assert!(column(&s, "n").is_none());
        assert_eq!(
            column(&s, "id"),
            Some(Column {
                ty: FieldType::String
            })
        );
    }

    #[test]
    fn collections_without_change_feed_get_no_feed_triggers() {
        let s = Schema::builder("queue", "id").without_change_feed().build();
        let ddl = entity_ddl(&s);
        assert!(!ddl.contains("CREATE OR REPLACE TRIGGER"), "{ddl}");
        assert_eq!(ddl.matches("DROP TRIGGER IF EXISTS").count(), 3, "{ddl}");
    }

    #[test]
    fn long_names_are_shortened_deterministically() {
        let long = "x".repeat(80);
        let a = index_name("t", &long, "idx");
        assert!(a.len() <= MAX_IDENT);
        assert_eq!(a, index_name("t", &long, "idx"));
    }
}
