//! The portable query model to SQL text plus a list of bound values.
//!
//! Only [`Checked`] filters, updates and queries come in, so every field path is
//! declared in (or lies under a free-form field of) the schema. Column names come
//! from the schema's own field declarations; every value and every JSON path
//! segment is a bound parameter. No caller string is ever part of the SQL text.
//!
//! Semantics follow `opstore_domain::eval` exactly: absent and null are the same,
//! numbers compare by value, strings by code point (`COLLATE "C"`), range
//! comparisons only between values of the same kind, `contains_ci` is a literal
//! substring match after Unicode lower-casing. Negations are pushed down to the
//! leaves so SQL's three-valued logic never turns a non-match into a match.

use chrono::{DateTime, Utc};
use opstore_domain::check::{AggField, Checked};
use opstore_domain::{
    FieldType, Filter, Result, Schema, SortDir, SortKey, StoreError, Update, UpdateOp, Value,
};

use crate::schema::{column, quote};

/// A value bound to a `$n` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Ts(DateTime<Utc>),
    Json(Value),
    TextArr(Vec<String>),
    IntArr(Vec<i64>),
    FloatArr(Vec<f64>),
    BoolArr(Vec<bool>),
    TsArr(Vec<DateTime<Utc>>),
    JsonArr(Vec<Value>),
    Bytes(Vec<u8>),
}

/// SQL text under construction and its bound values.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub(crate) fn new() -> Self {
        Sql::default()
    }
    /// Appends trusted text (built by this crate only).
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }
    /// Binds a value and returns its placeholder.
    pub(crate) fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }
    /// Binds a value and appends its placeholder.
    pub(crate) fn push_bind(&mut self, b: Bind) -> &mut Self {
        let p = self.bind(b);
        self.text.push_str(&p);
        self
    }
}

/// Dialect switches discovered at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    /// The server has ICU, so `lower()` can fold every script the way Rust does.
    pub icu: bool,
}

/// How a field path is read in SQL.
enum Target {
    /// A typed column.
    Col(String, FieldType),
    /// A JSON value: `doc -> $a -> $b` (SQL NULL when absent), with the path's type.
    Json(String, FieldType),
}

/// Translates filters, sorts and updates for one schema.
pub(crate) struct Translator<'s> {
    pub schema: &'static Schema,
    pub dialect: Dialect,
    pub sql: &'s mut Sql,
}

fn bad(msg: String) -> StoreError {
    StoreError::Validation(msg)
}

impl Translator<'_> {
    fn target(&mut self, path: &str) -> Result<Target> {
        let ty = self.schema.resolve(path)?;
        if let Some(col) = column(self.schema, path) {
            // The column name is the schema's copy of the path, not the caller's.
            let declared = self
                .schema
                .field(path)
                .map(|f| f.path())
                .unwrap_or_default();
            return Ok(Target::Col(quote(declared), col.ty));
        }
        Ok(Target::Json(self.json_path(path), ty))
    }

    /// `doc -> $a -> $b`: descends through objects only, like `eval::get_path`.
    fn json_path(&mut self, path: &str) -> String {
        let mut out = String::from("doc");
        for seg in path.split('.') {
            let p = self.sql.bind(Bind::Text(seg.to_owned()));
            out.push_str(&format!(" -> {p}"));
        }
        out
    }

    /// The path's segments as one `text[]` parameter.
    fn path_array(&mut self, path: &str) -> String {
        let segs = path.split('.').map(str::to_owned).collect();
        format!("{}::text[]", self.sql.bind(Bind::TextArr(segs)))
    }

    fn lower(&self, expr: &str) -> String {
        if self.dialect.icu {
            format!("lower(({expr}) COLLATE \"und-x-icu\")")
        } else {
            format!("lower({expr})")
        }
    }

    /// Binds a scalar for comparison with a typed column.
    fn col_value(&mut self, path: &str, ty: FieldType, v: &Value) -> Result<String> {
        let b = match ty {
            FieldType::String => {
                Bind::Text(v.as_str().ok_or_else(|| mistyped(path, v))?.to_owned())
            }
            FieldType::Int => match v.as_i64() {
                Some(i) => Bind::Int(i),
                // A float against a `bigint` column compares as `numeric`:
                // `bigint` against `double precision` would round the column.
                None => {
                    let p = self.sql.bind(Bind::Text(exact_decimal(path, v)?));
                    return Ok(format!("{p}::numeric"));
                }
            },
            FieldType::Float => Bind::Float(v.as_f64().ok_or_else(|| mistyped(path, v))?),
            FieldType::Bool => Bind::Bool(v.as_bool().ok_or_else(|| mistyped(path, v))?),
            FieldType::Timestamp => Bind::Ts(timestamp(path, v)?),
            _ => return Err(mistyped(path, v)),
        };
        Ok(self.sql.bind(b))
    }

    /// Binds same-typed scalars as one array for `= ANY(...)`.
    fn col_array(&mut self, path: &str, ty: FieldType, vs: &[&Value]) -> Result<String> {
        let b = match ty {
            FieldType::String => Bind::TextArr(
                vs.iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| mistyped(path, v))
                    })
                    .collect::<Result<_>>()?,
            ),
            FieldType::Int if vs.iter().all(|v| v.as_i64().is_some()) => {
                Bind::IntArr(vs.iter().filter_map(|v| v.as_i64()).collect())
            }
            FieldType::Int => {
                let texts = vs
                    .iter()
                    .map(|v| exact_decimal(path, v))
                    .collect::<Result<Vec<_>>>()?;
                let p = self.sql.bind(Bind::TextArr(texts));
                return Ok(format!("{p}::numeric[]"));
            }
            FieldType::Float => Bind::FloatArr(
                vs.iter()
                    .map(|v| v.as_f64().ok_or_else(|| mistyped(path, v)))
                    .collect::<Result<_>>()?,
            ),
            FieldType::Bool => Bind::BoolArr(
                vs.iter()
                    .map(|v| v.as_bool().ok_or_else(|| mistyped(path, v)))
                    .collect::<Result<_>>()?,
            ),
            FieldType::Timestamp => Bind::TsArr(
                vs.iter()
                    .map(|v| timestamp(path, v))
                    .collect::<Result<_>>()?,
            ),
            _ => return Err(mistyped(path, vs.first().copied().unwrap_or(&Value::Null))),
        };
        Ok(self.sql.bind(b))
    }

    /// A boolean SQL expression that is true exactly when `filter` (negated when
    /// `neg`) matches; it may be NULL only where a non-match is meant.
    pub(crate) fn filter(&mut self, filter: &Checked<Filter>) -> Result<String> {
        self.expr(filter, false)
    }

    fn expr(&mut self, f: &Filter, neg: bool) -> Result<String> {
        let out = match f {
            Filter::All => if neg { "false" } else { "true" }.to_owned(),
            Filter::And(fs) | Filter::Or(fs) => {
                let is_and = matches!(f, Filter::And(_)) != neg;
                if fs.is_empty() {
                    return Ok(if is_and { "true" } else { "false" }.to_owned());
                }
                let parts = fs
                    .iter()
                    .map(|g| self.expr(g, neg))
                    .collect::<Result<Vec<_>>>()?;
                format!("({})", parts.join(if is_and { " AND " } else { " OR " }))
            }
            Filter::Not(g) => self.expr(g, !neg)?,
            Filter::Eq(p, v) => self.eq(p, v, neg)?,
            Filter::Ne(p, v) => self.eq(p, v, !neg)?,
            Filter::Exists(p, want) => self.eq(p, &Value::Null, *want != neg)?,
            Filter::Gt(p, v) => self.range(p, ">", v, neg)?,
            Filter::Gte(p, v) => self.range(p, ">=", v, neg)?,
            Filter::Lt(p, v) => self.range(p, "<", v, neg)?,
            Filter::Lte(p, v) => self.range(p, "<=", v, neg)?,
            Filter::In(p, vs) => self.is_in(p, vs, neg)?,
            Filter::Nin(p, vs) => self.is_in(p, vs, !neg)?,
            Filter::ContainsCi(p, needle) => self.contains(p, needle, neg)?,
        };
        Ok(out)
    }

    fn eq(&mut self, path: &str, v: &Value, neg: bool) -> Result<String> {
        let target = self.target(path)?;
        Ok(match (target, v.is_null()) {
            (Target::Col(c, _), true) => format!("{c} IS {}NULL", if neg { "NOT " } else { "" }),
            (Target::Json(j, _), true) => {
                format!(
                    "coalesce(jsonb_typeof({j}), 'null') {} 'null'",
                    if neg { "<>" } else { "=" }
                )
            }
            (Target::Col(c, ty), false) => {
                let p = self.col_value(path, ty, v)?;
                if neg {
                    format!("{c} IS DISTINCT FROM {p}")
                } else {
                    format!("{c} = {p}")
                }
            }
            (Target::Json(j, _), false) => {
                let p = self.sql.bind(Bind::Json(v.clone()));
                if neg {
                    format!("({j}) IS DISTINCT FROM {p}")
                } else {
                    format!("({j}) = {p}")
                }
            }
        })
    }

    fn range(&mut self, path: &str, op: &str, v: &Value, neg: bool) -> Result<String> {
        let pos = match self.target(path)? {
            Target::Col(c, ty) => {
                let p = self.col_value(path, ty, v)?;
                format!("{c} {op} {p}")
            }
            Target::Json(j, _) => match v {
                Value::String(s) => {
                    let p = self.sql.bind(Bind::Text(s.clone()));
                    format!(
                        "(jsonb_typeof({j}) = 'string' AND (({j}) #>> '{{}}') COLLATE \"C\" {op} {p})"
                    )
                }
                Value::Number(_) | Value::Bool(_) => {
                    let kind = if v.is_number() { "number" } else { "boolean" };
                    let p = self.sql.bind(Bind::Json(v.clone()));
                    format!("(jsonb_typeof({j}) = '{kind}' AND ({j}) {op} {p})")
                }
                other => return Err(mistyped(path, other)),
            },
        };
        Ok(if neg {
            format!("NOT coalesce({pos}, false)")
        } else {
            pos
        })
    }

    fn is_in(&mut self, path: &str, vs: &[Value], neg: bool) -> Result<String> {
        if vs.is_empty() {
            return Ok(if neg { "true" } else { "false" }.to_owned());
        }
        let has_null = vs.iter().any(Value::is_null);
        let values: Vec<&Value> = vs.iter().filter(|v| !v.is_null()).collect();
        let mut parts = Vec::new();
        match self.target(path)? {
            Target::Col(c, ty) => {
                if !values.is_empty() {
                    let p = self.col_array(path, ty, &values)?;
                    parts.push(format!("{c} = ANY({p})"));
                }
                if has_null {
                    parts.push(format!("{c} IS NULL"));
                }
            }
            Target::Json(j, _) => {
                if !values.is_empty() {
                    let p = self
                        .sql
                        .bind(Bind::JsonArr(values.into_iter().cloned().collect()));
                    parts.push(format!("({j}) = ANY({p})"));
                }
                if has_null {
                    parts.push(format!("coalesce(jsonb_typeof({j}), 'null') = 'null'"));
                }
            }
        }
        let pos = format!("({})", parts.join(" OR "));
        Ok(if neg {
            format!("NOT coalesce({pos}, false)")
        } else {
            pos
        })
    }

    fn contains(&mut self, path: &str, needle: &str, neg: bool) -> Result<String> {
        let pattern = format!("%{}%", like_escape(&needle.to_lowercase()));
        let pos = match self.target(path)? {
            Target::Col(c, _) => {
                let p = self.sql.bind(Bind::Text(pattern));
                format!("{} LIKE {p} ESCAPE '\\'", self.lower(&c))
            }
            Target::Json(j, _) => {
                let p = self.sql.bind(Bind::Text(pattern));
                let text = format!("({j}) #>> '{{}}'");
                format!(
                    "(jsonb_typeof({j}) = 'string' AND {} LIKE {p} ESCAPE '\\')",
                    self.lower(&text)
                )
            }
        };
        Ok(if neg {
            format!("NOT coalesce({pos}, false)")
        } else {
            pos
        })
    }

    /// A sortable SQL expression for a scalar path.
    pub(crate) fn sort_expr(&mut self, path: &str) -> Result<String> {
        Ok(match self.target(path)? {
            Target::Col(c, _) => c,
            Target::Json(j, ty) => {
                let text = format!("(({j}) #>> '{{}}')");
                match ty {
                    FieldType::Int | FieldType::Float => format!("{text}::numeric"),
                    FieldType::Bool => format!("{text}::boolean"),
                    _ => format!("{text} COLLATE \"C\""),
                }
            }
        })
    }

    /// `ORDER BY` terms: the query's keys, the schema's default sort, then the key
    /// ascending. Ascending puts absent values first, descending last.
    pub(crate) fn order_by(&mut self, sort: &[SortKey]) -> Result<String> {
        let key = SortKey {
            path: self.schema.key().to_owned(),
            dir: SortDir::Asc,
        };
        let keys: Vec<SortKey> = sort
            .iter()
            .chain(self.schema.default_sort())
            .cloned()
            .chain([key])
            .collect();
        let mut terms = Vec::new();
        for k in &keys {
            let e = self.sort_expr(&k.path)?;
            // The key is never null; plain ASC lets the primary key index give the order.
            let is_key = k.path == self.schema.key();
            terms.push(match (k.dir, is_key) {
                (SortDir::Asc, true) => format!("{e} ASC"),
                (SortDir::Desc, true) => format!("{e} DESC"),
                (SortDir::Asc, false) => format!("{e} ASC NULLS FIRST"),
                (SortDir::Desc, false) => format!("{e} DESC NULLS LAST"),
            });
        }
        Ok(terms.join(", "))
    }

    /// The JSON value at a checked aggregate path (SQL NULL when absent).
    pub(crate) fn value_expr(&mut self, field: &Checked<AggField>) -> String {
        self.json_path(field.path())
    }

    /// The new document after `update`, as an expression over `base`.
    /// `set_on_insert` applies only when `inserting`.
    pub(crate) fn update(
        &mut self,
        update: &Checked<Update>,
        base: &str,
        inserting: bool,
    ) -> Result<String> {
        let mut expr = base.to_owned();
        // Consecutive top-level sets share one `jsonb_build_object`, since every
        // `||` rewrites the whole document (paths never repeat: the check
        // refuses conflicting paths).
        let mut pairs: Vec<String> = Vec::new();
        let flush = |expr: &mut String, pairs: &mut Vec<String>| {
            if !pairs.is_empty() {
                *expr = format!("({expr} || jsonb_build_object({}))", pairs.join(", "));
                pairs.clear();
            }
        };
        for op in &update.ops {
            let path = op.path();
            self.schema.resolve(path)?;
            let top = !path.contains('.');
            if let UpdateOp::SetOnInsert(..) = op {
                if !inserting {
                    continue;
                }
            }
            if let (true, UpdateOp::Set(_, v) | UpdateOp::SetOnInsert(_, v)) = (top, op) {
                let v = self.sql.bind(Bind::Json(self.stored_value(path, v)));
                let k = self.sql.bind(Bind::Text(path.to_owned()));
                pairs.push(format!("{k}::text, {v}::jsonb"));
                continue;
            }
            flush(&mut expr, &mut pairs);
            expr = match op {
                UpdateOp::Set(_, v) | UpdateOp::SetOnInsert(_, v) => {
                    let v = self.sql.bind(Bind::Json(self.stored_value(path, v)));
                    let p = self.path_array(path);
                    format!("opstore_set({expr}, {p}, {v}::jsonb)")
                }
                UpdateOp::Unset(_) => {
                    if top {
                        let k = self.sql.bind(Bind::Text(path.to_owned()));
                        format!("({expr} - {k}::text)")
                    } else {
                        let p = self.path_array(path);
                        format!("opstore_unset({expr}, {p})")
                    }
                }
                UpdateOp::Inc(_, by) if self.schema.resolve(path)? == FieldType::Int => {
                    // Checked `bigint` arithmetic: a sum past the 64-bit range
                    // fails (SQLSTATE 22003) instead of becoming a float the
                    // field cannot hold. No earlier operator touched this path
                    // (overlapping paths are refused), so its value in `base`
                    // is its current value.
                    let by = by.as_i64().ok_or_else(|| mistyped(path, by))?;
                    let p = self.path_array(path);
                    let cur = self.path_array(path);
                    let by = self.sql.bind(Bind::Int(by));
                    format!(
                        "opstore_set({expr}, {p}, to_jsonb(coalesce(opstore_get({base}, {cur})::bigint, 0) + {by}::bigint))"
                    )
                }
                UpdateOp::Inc(_, by) => {
                    let p = self.path_array(path);
                    let by = self.sql.bind(Bind::Json(by.clone()));
                    format!("opstore_inc({expr}, {p}, {by}::jsonb)")
                }
                UpdateOp::Push(_, v) => {
                    let dedup = matches!(
                        self.schema.field(path).map(|f| f.ty()),
                        Some(FieldType::Set(_))
                    );
                    let p = self.path_array(path);
                    let v = self.sql.bind(Bind::Json(v.clone()));
                    format!("opstore_push({expr}, {p}, {v}::jsonb, {dedup})")
                }
            };
        }
        flush(&mut expr, &mut pairs);
        Ok(expr)
    }

    /// A condition that holds exactly when `new` (built by [`Self::update`] over
    /// `base`) differs from `base`. An update that only sets and unsets
    /// top-level fields compares just those fields, instead of building the new
    /// document a second time and comparing whole documents.
    pub(crate) fn changes(
        &mut self,
        update: &Checked<Update>,
        base: &str,
        new: &str,
    ) -> Result<String> {
        let mut sets = Vec::new();
        let mut unsets = Vec::new();
        for op in &update.ops {
            match op {
                UpdateOp::SetOnInsert(..) => {}
                UpdateOp::Set(path, v)
                    if !path.contains('.') && !sets.iter().any(|(p, _)| p == path) =>
                {
                    sets.push((path.clone(), self.stored_value(path, v)));
                }
                // Paths never repeat (the check refuses conflicting ones), so
                // removing a top-level field changes the document exactly when
                // the field is there.
                UpdateOp::Unset(path) if !path.contains('.') => unsets.push(path.clone()),
                _ => return Ok(format!("{new} IS DISTINCT FROM {base}")),
            }
        }
        if sets.is_empty() && unsets.is_empty() {
            return Ok("false".to_owned());
        }
        let mut terms = Vec::with_capacity(sets.len() + unsets.len());
        for (path, v) in sets {
            let k = self.sql.bind(Bind::Text(path));
            let v = self.sql.bind(Bind::Json(v));
            terms.push(format!("({base} -> {k}::text) IS DISTINCT FROM {v}::jsonb"));
        }
        for path in unsets {
            let k = self.sql.bind(Bind::Text(path));
            terms.push(format!("({base} ? {k}::text)"));
        }
        Ok(format!("({})", terms.join(" OR ")))
    }

    /// A set-typed field stores its elements once.
    fn stored_value(&self, path: &str, v: &Value) -> Value {
        match (self.schema.field(path).map(|f| f.ty()), v) {
            (Some(FieldType::Set(_)), Value::Array(items)) => {
                let mut items = items.clone();
                opstore_domain::eval::dedup_array(&mut items);
                Value::Array(items)
            }
            _ => v.clone(),
        }
    }
}

fn mistyped(path: &str, v: &Value) -> StoreError {
    bad(format!(
        "value of type {} does not fit field `{path}`",
        opstore_domain::schema::type_name(v)
    ))
}

/// The decimal text of a JSON number, exact for every integer and integral
/// float. A float with a fraction is below 2^52 in magnitude, where its
/// shortest round-trip text has no integer between it and the float, so
/// comparisons with integers come out as with the float itself.
fn exact_decimal(path: &str, v: &Value) -> Result<String> {
    if let Some(i) = v.as_i64() {
        return Ok(i.to_string());
    }
    if let Some(u) = v.as_u64() {
        return Ok(u.to_string());
    }
    let f = v.as_f64().ok_or_else(|| mistyped(path, v))?;
    Ok(if f.fract() == 0.0 {
        format!("{f:.0}")
    } else {
        format!("{f}")
    })
}

fn timestamp(path: &str, v: &Value) -> Result<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| s.parse::<opstore_domain::Timestamp>().ok())
        .map(opstore_domain::Timestamp::to_datetime)
        .ok_or_else(|| bad(format!("`{path}` expects an RFC 3339 timestamp")))
}

/// Escapes `%`, `_` and `\` so a LIKE pattern matches the text literally.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::{Field, Query, ScalarType, json};
    use std::sync::LazyLock;

    static S: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("things", "id")
            .field(Field::new("name", FieldType::String).indexed())
            .field(Field::new("n", FieldType::Int))
            .field(Field::new("meta", FieldType::Json).optional())
            .field(Field::new("tags", FieldType::Set(ScalarType::String)))
            .field(Field::new("at", FieldType::Timestamp).indexed())
            .build()
    });

    fn where_of(f: Filter) -> Sql {
        let mut sql = Sql::new();
        let checked = S.check_filter(&f).unwrap();
        let text = Translator {
            schema: &S,
            dialect: Dialect { icu: true },
            sql: &mut sql,
        }
        .filter(&checked)
        .unwrap();
        sql.text = text;
        sql
    }

    #[test]
    fn indexed_fields_use_their_column_and_others_json() {
        let sql = where_of(Filter::eq("name", "a").and(Filter::gt("n", 3)));
        assert_eq!(
            sql.text,
            "(\"name\" = $1 AND (jsonb_typeof(doc -> $2) = 'number' AND (doc -> $2) > $3))"
        );
        assert_eq!(sql.binds[0], Bind::Text("a".into()));
        assert_eq!(sql.binds[1], Bind::Text("n".into()));
    }

    #[test]
    fn negation_is_pushed_to_the_leaves() {
        let sql = where_of(Filter::eq("name", "a").or(Filter::missing("meta.x")).not());
        assert_eq!(
            sql.text,
            "(\"name\" IS DISTINCT FROM $1 AND coalesce(jsonb_typeof(doc -> $2 -> $3), 'null') <> 'null')"
        );
    }

    #[test]
    fn caller_strings_never_reach_the_sql_text() {
        let evil = "x'); DROP TABLE things; --";
        let f = Filter::all_of([
            Filter::eq("name", evil),
            Filter::contains_ci("meta.k", evil),
            Filter::is_in("meta.sub-key_9", [json!(evil)]),
            Filter::gt("meta.q", evil),
        ]);
        let sql = where_of(f);
        assert!(!sql.text.contains("DROP"), "{}", sql.text);
        assert!(!sql.text.contains("sub-key_9"), "{}", sql.text);
        assert!(!sql.text.contains("'k'"), "{}", sql.text);
        let err = S.check_filter(&Filter::eq("meta.a'--", 1)).unwrap_err();
        assert!(err.is_validation());
    }

    #[test]
    fn contains_escapes_like_wildcards() {
        assert_eq!(like_escape("100%_a\\b"), "100\\%\\_a\\\\b");
        let sql = where_of(Filter::contains_ci("name", "50% Off"));
        assert_eq!(sql.binds[0], Bind::Text("%50\\% off%".into()));
        assert!(sql.text.contains("LIKE $1 ESCAPE"), "{}", sql.text);
    }

    #[test]
    fn order_by_ends_with_the_key() {
        let mut sql = Sql::new();
        let q = S.check_query(&Query::new().sort_desc("n")).unwrap();
        let order = Translator {
            schema: &S,
            dialect: Dialect { icu: false },
            sql: &mut sql,
        }
        .order_by(&q.sort)
        .unwrap();
        assert_eq!(
            order,
            "((doc -> $1) #>> '{}')::numeric DESC NULLS LAST, \"id\" ASC"
        );
    }

    #[test]
    fn top_level_sets_compare_only_their_fields() {
        let mut sql = Sql::new();
        let u = S
            .check_update(&Update::new().set("name", "b").set("n", 2))
            .unwrap();
        let mut tr = Translator {
            schema: &S,
            dialect: Dialect { icu: false },
            sql: &mut sql,
        };
        let new = tr.update(&u, "doc", false).unwrap();
        let changed = tr.changes(&u, "doc", &new).unwrap();
        assert_eq!(
            changed,
            "((doc -> $5::text) IS DISTINCT FROM $6::jsonb OR (doc -> $7::text) IS DISTINCT FROM $8::jsonb)"
        );
        let unset = S
            .check_update(&Update::new().set("name", "b").unset("meta"))
            .unwrap();
        let changed = tr.changes(&unset, "doc", "NEW").unwrap();
        assert_eq!(
            changed,
            "((doc -> $9::text) IS DISTINCT FROM $10::jsonb OR (doc ? $11::text))"
        );
        let nested = S.check_update(&Update::new().set("meta.x", 1)).unwrap();
        let changed = tr.changes(&nested, "doc", "NEW").unwrap();
        assert_eq!(changed, "NEW IS DISTINCT FROM doc");
    }

    #[test]
    fn updates_nest_one_expression_per_operator() {
        let mut sql = Sql::new();
        let u = S
            .check_update(
                &Update::new()
                    .set("name", "b")
                    .inc("n", 2)
                    .push("tags", "t")
                    .unset("meta.x"),
            )
            .unwrap();
        let e = Translator {
            schema: &S,
            dialect: Dialect { icu: false },
            sql: &mut sql,
        }
        .update(&u, "doc", false)
        .unwrap();
        assert_eq!(
            e,
            "opstore_unset(opstore_push(opstore_set((doc || jsonb_build_object($2::text, $1::jsonb)), $3::text[], to_jsonb(coalesce(opstore_get(doc, $4::text[])::bigint, 0) + $5::bigint)), $6::text[], $7::jsonb, true), $8::text[])"
        );
    }

    #[test]
    fn consecutive_top_level_sets_share_one_object() {
        let mut sql = Sql::new();
        let u = S
            .check_update(
                &Update::new()
                    .set("name", "b")
                    .unset("meta")
                    .set("n", 3)
                    .set("tags", vec!["t"]),
            )
            .unwrap();
        let e = Translator {
            schema: &S,
            dialect: Dialect { icu: false },
            sql: &mut sql,
        }
        .update(&u, "doc", false)
        .unwrap();
        assert_eq!(
            e,
            "(((doc || jsonb_build_object($2::text, $1::jsonb)) - $3::text) || jsonb_build_object($5::text, $4::jsonb, $7::text, $6::jsonb))"
        );
    }

    #[test]
    fn only_int_fields_get_checked_integer_increments() {
        let mut sql = Sql::new();
        let u = S.check_update(&Update::new().inc("meta.c", 2)).unwrap();
        let e = Translator {
            schema: &S,
            dialect: Dialect { icu: false },
            sql: &mut sql,
        }
        .update(&u, "doc", false)
        .unwrap();
        assert_eq!(e, "opstore_inc(doc, $1::text[], $2::jsonb)");
    }
}
