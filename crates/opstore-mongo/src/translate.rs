//! The portable query model translated to native MongoDB documents.
//!
//! Every function here takes checked input ([`Checked`]): field paths were
//! resolved against the schema, so a path never carries an operator. Values are
//! always placed where MongoDB reads them as literals (`$eq`, `$in`, `$set`
//! operands), so a value such as `{"$where": "..."}` is data.

use mongodb::bson::{Bson, Document, doc};
use opstore_domain::schema::FieldType;
use opstore_domain::{
    AggField, Checked, Filter, Result, Schema, SortDir, StoreError, Timestamp, Update, UpdateOp,
    Value,
};

/// Hidden field holding the TTL field as a BSON date, for the TTL index.
pub const TTL_SHADOW: &str = "_opstore_ttl";

/// Hidden field `get_for_update` writes inside a transaction to lock a document.
pub const LOCK_FIELD: &str = "_opstore_lock";

/// MongoDB's largest document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// The `$`-reference to a checked aggregate path in a pipeline stage; the entity
/// key is stored as `_id`.
pub fn field_ref(schema: &Schema, field: &Checked<AggField>) -> String {
    if field.path() == schema.key() {
        "$_id".to_owned()
    } else {
        format!("${}", field.path())
    }
}

/// JSON to BSON: integers become `Int64`, other numbers `Double`; object keys
/// are written in sorted order, so equal objects are equal BSON whatever order
/// their keys were built in (MongoDB compares embedded documents in order).
pub fn to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Bson::Int64(i),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect()),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Bson::Document(
                keys.into_iter()
                    .map(|k| (k.clone(), to_bson(&map[k])))
                    .collect(),
            )
        }
    }
}

/// A value written at `path`: integers bound for a `Float` field are stored as
/// doubles, so writing `2` over `2.0` is no change (as in the portable model).
fn typed_bson(schema: &Schema, path: &str, v: &Value) -> Bson {
    match (schema.resolve(path), v) {
        (Ok(FieldType::Float), Value::Number(n)) => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        _ => to_bson(v),
    }
}

/// Stores integers of declared `Float` fields as doubles.
fn coerce_floats(schema: &Schema, d: &mut Document) {
    for field in schema
        .fields()
        .iter()
        .filter(|f| f.ty() == FieldType::Float)
    {
        let mut cur = &mut *d;
        let mut segs = field.path().split('.').peekable();
        while let Some(seg) = segs.next() {
            if segs.peek().is_none() {
                if let Some(Bson::Int64(i)) = cur.get(seg) {
                    let f = *i as f64;
                    cur.insert(seg, Bson::Double(f));
                }
                break;
            }
            match cur.get_mut(seg) {
                Some(Bson::Document(next)) => cur = next,
                _ => break,
            }
        }
    }
}

/// BSON to JSON. Dates become canonical timestamp text; other BSON-only types
/// (which opstore never writes) use relaxed extended JSON.
pub fn to_json(b: Bson) -> Value {
    match b {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(x) => Value::Bool(x),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Double(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Bson::String(s) => Value::String(s),
        Bson::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Bson::Document(d) => Value::Object(d.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        Bson::DateTime(d) => Value::String(Timestamp::from_millis(d.timestamp_millis()).to_text()),
        other => other.into_relaxed_extjson(),
    }
}

/// A decimal (an exact sum) as JSON: an integer when it is one that fits 64
/// bits, otherwise the nearest float, as the reference sums numbers.
pub fn decimal_to_json(d: &mongodb::bson::Decimal128) -> Value {
    let text = d.to_string();
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// A stored document back to the entity's JSON: drops `_id` and hidden fields.
pub fn from_stored(mut d: Document) -> Value {
    d.remove("_id");
    d.remove(TTL_SHADOW);
    d.remove(LOCK_FIELD);
    to_json(Bson::Document(d))
}

/// The document to store for an entity: the JSON fields, `_id` = key, and the
/// TTL shadow date. Fails when the encoded document exceeds 16 MiB.
pub fn to_stored(schema: &Schema, key: &str, doc: &Value, op: &str) -> Result<Document> {
    let mut d = Document::new();
    d.insert("_id", key);
    if let Bson::Document(fields) = to_bson(doc) {
        d.extend(fields);
    }
    coerce_floats(schema, &mut d);
    if let Some(ttl) = schema.ttl() {
        if let Some(date) = ttl_date(opstore_domain::eval::get_path(doc, &ttl.field)) {
            d.insert(TTL_SHADOW, date);
        }
    }
    check_size(&d, schema.name(), key, op)?;
    Ok(d)
}

/// `Validation` when `d` is larger than MongoDB accepts, before it is sent.
pub fn check_size(d: &Document, collection: &str, key: &str, op: &str) -> Result<()> {
    let mut buf = Vec::new();
    d.to_writer(&mut buf).map_err(|e| {
        StoreError::Validation(format!(
            "{op} `{key}` in `{collection}`: cannot encode: {e}"
        ))
    })?;
    if buf.len() > MAX_DOCUMENT_BYTES {
        return Err(StoreError::Validation(format!(
            "{op} `{key}` in `{collection}`: document is {} bytes; MongoDB stores at most {MAX_DOCUMENT_BYTES} bytes (16 MiB)",
            buf.len()
        )));
    }
    Ok(())
}

fn ttl_date(v: Option<&Value>) -> Option<Bson> {
    let t: Timestamp = v?.as_str()?.parse().ok()?;
    Some(Bson::DateTime(mongodb::bson::DateTime::from_millis(
        t.as_millis(),
    )))
}

/// The native path of a field: the key field is `_id` (same value, indexed).
fn native_path(schema: &Schema, path: &str, prefix: &str) -> String {
    if prefix.is_empty() && path == schema.key() {
        "_id".to_owned()
    } else {
        format!("{prefix}{path}")
    }
}

/// A filter as a query document. `prefix` is prepended to every path
/// (`"fullDocument."` for change streams).
pub fn filter(schema: &Schema, f: &Checked<Filter>, prefix: &str) -> Document {
    filter_inner(schema, f, prefix)
}

fn filter_inner(schema: &Schema, f: &Filter, prefix: &str) -> Document {
    let p = |path: &str| native_path(schema, path, prefix);
    match f {
        Filter::All => Document::new(),
        Filter::Eq(path, v) => doc! { p(path): { "$eq": to_bson(v) } },
        Filter::Ne(path, v) => doc! { p(path): { "$ne": to_bson(v) } },
        Filter::Gt(path, v) => doc! { p(path): { "$gt": to_bson(v) } },
        Filter::Gte(path, v) => doc! { p(path): { "$gte": to_bson(v) } },
        Filter::Lt(path, v) => doc! { p(path): { "$lt": to_bson(v) } },
        Filter::Lte(path, v) => doc! { p(path): { "$lte": to_bson(v) } },
        Filter::In(path, vs) => {
            doc! { p(path): { "$in": vs.iter().map(to_bson).collect::<Vec<_>>() } }
        }
        Filter::Nin(path, vs) => {
            doc! { p(path): { "$nin": vs.iter().map(to_bson).collect::<Vec<_>>() } }
        }
        Filter::Exists(path, true) => doc! { p(path): { "$ne": Bson::Null } },
        Filter::Exists(path, false) => doc! { p(path): { "$eq": Bson::Null } },
        Filter::ContainsCi(path, needle) => {
            doc! { p(path): { "$regex": escape_regex(needle), "$options": "i" } }
        }
        Filter::And(fs) if fs.is_empty() => Document::new(),
        Filter::And(fs) => {
            doc! { "$and": fs.iter().map(|f| filter_inner(schema, f, prefix)).collect::<Vec<_>>() }
        }
        // `$or` needs at least one clause; an empty disjunction matches nothing.
        Filter::Or(fs) if fs.is_empty() => doc! { "_id": { "$in": [] } },
        Filter::Or(fs) => {
            doc! { "$or": fs.iter().map(|f| filter_inner(schema, f, prefix)).collect::<Vec<_>>() }
        }
        // `$not` only wraps operator expressions; `$nor` negates a whole clause.
        Filter::Not(f) => doc! { "$nor": [filter_inner(schema, f, prefix)] },
    }
}

/// Escapes every ASCII punctuation character so the needle is literal text in a
/// PCRE pattern (escaping punctuation is always literal; letters are left alone).
pub fn escape_regex(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() * 2);
    for c in needle.chars() {
        if c == '\0' {
            out.push_str("\\x00");
        } else if c.is_ascii_punctuation() || c == ' ' {
            out.push('\\');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Both filters (either may be empty).
pub fn and(a: Document, b: Document) -> Document {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b,
        (_, true) => a,
        _ => doc! { "$and": [a, b] },
    }
}

/// Documents whose TTL has not passed at `now`: the TTL field, compared as
/// canonical text (which sorts in time order), is later than `now - after`.
/// Absent TTL fields never expire.
pub fn visible(schema: &Schema, now: Timestamp) -> Document {
    let Some(ttl) = schema.ttl() else {
        return Document::new();
    };
    let cutoff = now.sub(ttl.after).to_text();
    let optional = schema.field(&ttl.field).is_none_or(|f| f.is_optional());
    if optional {
        doc! { "$or": [ { &ttl.field: { "$eq": Bson::Null } }, { &ttl.field: { "$gt": cutoff } } ] }
    } else {
        doc! { &ttl.field: { "$gt": cutoff } }
    }
}

/// Documents whose TTL has passed at `now`.
pub fn expired(schema: &Schema, now: Timestamp) -> Option<Document> {
    let ttl = schema.ttl()?;
    Some(doc! { &ttl.field: { "$lte": now.sub(ttl.after).to_text() } })
}

/// The sort document: query keys, then the schema's default sort, then the key.
pub fn sort(schema: &Schema, keys: &[opstore_domain::SortKey]) -> Document {
    let mut d = Document::new();
    for k in keys.iter().chain(schema.default_sort()) {
        let path = native_path(schema, &k.path, "");
        if !d.contains_key(&path) {
            d.insert(path, if k.dir == SortDir::Asc { 1 } else { -1 });
        }
    }
    if !d.contains_key("_id") {
        d.insert("_id", 1);
    }
    d
}

/// An update as operator documents.
///
/// Fails with `Validation` when a written value holds an object key that starts
/// with `$` or contains `.` (MongoDB would not store it as data under an update
/// operator); inserts and replaces store such keys as data.
pub fn update(schema: &Schema, u: &Checked<Update>) -> Result<Document> {
    let mut set = Document::new();
    let mut unset = Document::new();
    let mut inc = Document::new();
    let mut push = Document::new();
    let mut add_to_set = Document::new();
    let mut on_insert = Document::new();
    let ttl = schema.ttl();
    for op in &u.ops {
        let path = op.path();
        match op {
            UpdateOp::Set(_, v)
            | UpdateOp::SetOnInsert(_, v)
            | UpdateOp::Push(_, v)
            | UpdateOp::Inc(_, v) => {
                check_value_keys(schema, path, v)?;
            }
            UpdateOp::Unset(_) => {}
        }
        match op {
            UpdateOp::Set(_, v) => set.insert(path, typed_bson(schema, path, v)),
            UpdateOp::SetOnInsert(_, v) => on_insert.insert(path, typed_bson(schema, path, v)),
            UpdateOp::Unset(_) => unset.insert(path, ""),
            UpdateOp::Inc(_, v) => inc.insert(path, typed_bson(schema, path, v)),
            UpdateOp::Push(_, v) => match schema.resolve(path) {
                Ok(FieldType::Set(_)) => add_to_set.insert(path, to_bson(v)),
                _ => push.insert(path, to_bson(v)),
            },
        };
        // Keep the TTL index's date in step with the TTL field.
        if let Some(ttl) = ttl {
            let covers = ttl.field == path || ttl.field.starts_with(&format!("{path}."));
            if covers {
                let rel = &ttl.field[path.len()..].trim_start_matches('.');
                let date = match op {
                    UpdateOp::Set(_, v) | UpdateOp::SetOnInsert(_, v) => {
                        if rel.is_empty() {
                            ttl_date(Some(v))
                        } else {
                            ttl_date(opstore_domain::eval::get_path(v, rel))
                        }
                    }
                    _ => None,
                };
                match (op, date) {
                    (UpdateOp::SetOnInsert(..), Some(d)) => on_insert.insert(TTL_SHADOW, d),
                    (UpdateOp::SetOnInsert(..), None) => None,
                    (_, Some(d)) => set.insert(TTL_SHADOW, d),
                    (_, None) => unset.insert(TTL_SHADOW, ""),
                };
            }
        }
    }
    let mut d = Document::new();
    for (name, part) in [
        ("$set", set),
        ("$unset", unset),
        ("$inc", inc),
        ("$push", push),
        ("$addToSet", add_to_set),
        ("$setOnInsert", on_insert),
    ] {
        if !part.is_empty() {
            d.insert(name, part);
        }
    }
    Ok(d)
}

/// The update that turns stored document `old` into `new` with `$set` and
/// `$unset` of top-level fields (so the change feed sees an update, and the
/// row-lock field stays); `None` when they are the same.
pub fn write_back(old: &Document, new: &Document) -> Option<Document> {
    let mut set = Document::new();
    let mut unset = Document::new();
    for (k, v) in new {
        if k != "_id" && old.get(k) != Some(v) {
            set.insert(k.clone(), v.clone());
        }
    }
    for k in old.keys() {
        if k != "_id" && k != LOCK_FIELD && !new.contains_key(k) {
            unset.insert(k.clone(), "");
        }
    }
    let mut d = Document::new();
    if !set.is_empty() {
        d.insert("$set", set);
    }
    if !unset.is_empty() {
        d.insert("$unset", unset);
    }
    (!d.is_empty()).then_some(d)
}

fn check_value_keys(schema: &Schema, path: &str, v: &Value) -> Result<()> {
    match v {
        Value::Object(map) => {
            for (k, inner) in map {
                if k.starts_with('$') || k.contains('.') || k.is_empty() {
                    return Err(StoreError::Validation(format!(
                        "update of `{path}` in `{}`: object key {k:?} starts with `$`, contains `.` or is empty; \
                         MongoDB cannot store it through an update operator (replace the document instead)",
                        schema.name()
                    )));
                }
                check_value_keys(schema, path, inner)?;
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .try_for_each(|i| check_value_keys(schema, path, i)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::{Field, Query, ScalarType, json};
    use std::sync::LazyLock;
    use std::time::Duration;

    static S: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("items", "id")
            .field(Field::new("name", FieldType::String).indexed())
            .field(Field::new("n", FieldType::Int))
            .field(Field::new("tags", FieldType::Set(ScalarType::String)))
            .field(Field::new("meta", FieldType::Json).optional())
            .field(Field::new("at", FieldType::Timestamp))
            .ttl("at", Duration::from_secs(60))
            .default_sort("n", SortDir::Desc)
            .build()
    });

    fn f(filter: Filter) -> Document {
        filter_of(&S, filter)
    }

    fn filter_of(s: &Schema, filter: Filter) -> Document {
        filter_inner(s, &s.check_filter(&filter).unwrap(), "")
    }

    #[test]
    fn equality_uses_eq_and_the_key_maps_to_id() {
        assert_eq!(f(Filter::eq("name", "a")), doc! { "name": { "$eq": "a" } });
        assert_eq!(f(Filter::eq("id", "k")), doc! { "_id": { "$eq": "k" } });
        assert_eq!(f(Filter::eq("n", 1)), doc! { "n": { "$eq": 1_i64 } });
        assert_eq!(
            f(Filter::missing("meta")),
            doc! { "meta": { "$eq": Bson::Null } }
        );
        assert_eq!(
            f(Filter::exists("meta")),
            doc! { "meta": { "$ne": Bson::Null } }
        );
    }

    #[test]
    fn boolean_structure() {
        assert_eq!(f(Filter::And(vec![])), Document::new());
        assert_eq!(f(Filter::Or(vec![])), doc! { "_id": { "$in": [] } });
        assert_eq!(
            f(Filter::eq("name", "a").not()),
            doc! { "$nor": [ { "name": { "$eq": "a" } } ] }
        );
        assert_eq!(
            f(Filter::eq("name", "a").or(Filter::gt("n", 2))),
            doc! { "$or": [ { "name": { "$eq": "a" } }, { "n": { "$gt": 2_i64 } } ] }
        );
    }

    #[test]
    fn operator_looking_values_stay_literal_operands() {
        let d = f(Filter::eq("meta", json!({"$where": "sleep(1000)"})));
        assert_eq!(d, doc! { "meta": { "$eq": { "$where": "sleep(1000)" } } });
        let d = f(Filter::is_in("name", ["$ne", "{\"$gt\": \"\"}"]));
        assert_eq!(d, doc! { "name": { "$in": ["$ne", "{\"$gt\": \"\"}"] } });
    }

    #[test]
    fn operator_field_names_never_reach_a_query() {
        assert!(
            S.check_filter(&Filter::eq("$where", "1"))
                .unwrap_err()
                .is_validation()
        );
        assert!(
            S.check_filter(&Filter::eq("meta.$gt", "1"))
                .unwrap_err()
                .is_validation()
        );
        assert!(
            S.check_update(&Update::new().set("$set", 1))
                .unwrap_err()
                .is_validation()
        );
    }

    #[test]
    fn contains_is_an_escaped_case_insensitive_regex() {
        let d = f(Filter::contains_ci("name", "a.b*(c)$"));
        assert_eq!(
            d,
            doc! { "name": { "$regex": "a\\.b\\*\\(c\\)\\$", "$options": "i" } }
        );
        assert_eq!(escape_regex("ünï"), "ünï");
    }

    #[test]
    fn sort_appends_default_sort_and_key() {
        let q = Query::new().sort_asc("name");
        assert_eq!(sort(&S, &q.sort), doc! { "name": 1, "n": -1, "_id": 1 });
        assert_eq!(
            sort(&S, &Query::new().sort_desc("id").sort),
            doc! { "_id": -1, "n": -1 }
        );
    }

    #[test]
    fn update_groups_operators_and_uses_add_to_set_for_sets() {
        let u = Update::new()
            .set("name", "x")
            .inc("n", 2)
            .push("tags", "t")
            .set_on_insert("meta", json!({"a": 1}));
        let d = update(&S, &S.check_update(&u).unwrap()).unwrap();
        assert_eq!(
            d,
            doc! {
                "$set": { "name": "x" },
                "$inc": { "n": 2_i64 },
                "$addToSet": { "tags": "t" },
                "$setOnInsert": { "meta": { "a": 1_i64 } },
            }
        );
    }

    #[test]
    fn update_keeps_the_ttl_shadow_in_step() {
        let u = Update::new().set("at", "2026-01-01T00:00:00.000000Z");
        let d = update(&S, &S.check_update(&u).unwrap()).unwrap();
        let set = d.get_document("$set").unwrap();
        assert!(
            matches!(set.get(TTL_SHADOW), Some(Bson::DateTime(_))),
            "{d}"
        );
    }

    #[test]
    fn dollar_keys_in_update_values_are_rejected_by_name() {
        let u = Update::new().set("meta", json!({"ok": {"$where": "1"}}));
        let err = update(&S, &S.check_update(&u).unwrap()).unwrap_err();
        assert!(
            err.is_validation() && err.to_string().contains("$where"),
            "{err}"
        );
    }

    #[test]
    fn stored_documents_round_trip() {
        let v = json!({"id": "k", "name": "a", "n": 3, "tags": [], "meta": {"$where": 1.5}, "at": "2026-01-01T00:00:00.000000Z"});
        let d = to_stored(&S, "k", &v, "insert").unwrap();
        assert_eq!(d.get_str("_id").unwrap(), "k");
        assert!(d.contains_key(TTL_SHADOW));
        assert_eq!(from_stored(d), v);
    }

    #[test]
    fn oversized_documents_are_validation_errors() {
        let big = "x".repeat(MAX_DOCUMENT_BYTES);
        let v = json!({"id": "k", "name": big});
        let err = to_stored(&S, "k", &v, "insert").unwrap_err();
        assert!(
            err.is_validation() && err.to_string().contains("16 MiB"),
            "{err}"
        );
    }

    #[test]
    fn decimal_sums_become_integers_or_floats() {
        let dec = |s: &str| s.parse::<mongodb::bson::Decimal128>().unwrap();
        assert_eq!(decimal_to_json(&dec("42")), json!(42));
        assert_eq!(
            decimal_to_json(&dec("-9223372036854775808")),
            json!(i64::MIN)
        );
        assert_eq!(
            decimal_to_json(&dec("9223372036854775808")),
            json!(9.223_372_036_854_776e18)
        );
    }

    #[test]
    fn ttl_visibility_compares_canonical_text() {
        let now: Timestamp = "2026-01-01T00:01:00.000000Z".parse().unwrap();
        assert_eq!(
            visible(&S, now),
            doc! { "at": { "$gt": "2026-01-01T00:00:00.000000Z" } }
        );
    }
}
