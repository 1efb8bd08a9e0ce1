//! The portable query model to SQL text plus bound values, where SQLite can
//! evaluate it exactly as the reference does; the rest stays in process.
//!
//! Only [`Checked`] filters and queries come in, so every field path is
//! declared in (or lies under a free-form field of) the schema. Column names
//! come from the schema's own declarations; every value and every JSON path is
//! a bound parameter. No caller string is ever part of the SQL text.
//!
//! SQLite's JSON functions blur kinds the reference keeps apart (`true` reads as
//! `1`, an object as its text) and parse floats with their own rounding, so a
//! leaf is translated only where the schema fixes the kind of the stored value:
//! string, timestamp, integer and boolean fields compared with a value of the
//! same kind. Strings compare by code point (SQLite's `BINARY` collation on
//! UTF-8), absent and null are both SQL NULL, and negations are pushed down to
//! the leaves so three-valued logic never turns a non-match into a match.
//! Every other leaf (floats, free-form JSON, arrays, `contains_ci` with its
//! Unicode case folding) is left to `opstore_domain::eval`.

use opstore_domain::check::Checked;
use opstore_domain::{FieldType, Filter, Query, Schema, SortDir, SortKey, Timestamp, Value};

use crate::config::SqliteClock;
use crate::schema::{column, quote};

/// A value bound to a `?N` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    Null,
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
        format!("?{}", self.binds.len())
    }
    /// The current time in microseconds since the epoch, by `clock`: the
    /// database's own (evaluated once per statement) or a bound manual time.
    pub(crate) fn now(&mut self, clock: &SqliteClock) -> String {
        match clock {
            SqliteClock::Database => "CAST(unixepoch('subsec') * 1000000 AS INTEGER)".to_owned(),
            SqliteClock::Manual(c) => {
                let now = opstore_domain::Clock::now(c);
                self.bind(Bind::Int(now.as_micros()))
            }
        }
    }
}

/// The JSON path of a dotted field path: `$."a"."b"`. Segments are checked
/// ASCII identifiers (letters, digits, `_`, `-`), so quoting cannot break.
pub(crate) fn json_path(path: &str) -> String {
    let mut out = String::from("$");
    for seg in path.split('.') {
        out.push_str(".\"");
        out.push_str(seg);
        out.push('"');
    }
    out
}

/// A filter split into what SQL decides and what the reference evaluator
/// decides on the rows SQL returns.
#[derive(Debug)]
pub(crate) struct Plan {
    /// A condition true exactly for rows matching the translated part.
    pub sql_where: String,
    /// The part left to `eval::matches`, `None` when SQL decides everything.
    pub residual: Option<Filter>,
}

/// Translates filters and sorts for one schema.
pub(crate) struct Translator<'s> {
    pub schema: &'static Schema,
    pub sql: &'s mut Sql,
}

impl Translator<'_> {
    /// Splits a filter: the conjuncts SQL evaluates exactly go to `sql_where`,
    /// the others (if any) stay for the reference evaluator.
    pub(crate) fn plan(&mut self, filter: &Checked<Filter>) -> Plan {
        let parts: Vec<&Filter> = match &**filter {
            Filter::And(fs) => fs.iter().collect(),
            f => vec![f],
        };
        let mut exact = Vec::new();
        let mut rest = Vec::new();
        for f in parts {
            // Translate into a scratch copy so a refused leaf binds nothing.
            let mut scratch = self.sql.clone();
            let out = Translator {
                schema: self.schema,
                sql: &mut scratch,
            }
            .expr(f, false);
            match out {
                Some(text) => {
                    *self.sql = scratch;
                    exact.push(text);
                }
                None => rest.push(f.clone()),
            }
        }
        let sql_where = if exact.is_empty() {
            "1".to_owned()
        } else {
            exact.join(" AND ")
        };
        let residual = match rest.len() {
            0 => None,
            1 => rest.pop(),
            _ => Some(Filter::And(rest)),
        };
        Plan {
            sql_where,
            residual,
        }
    }

    /// A typed SQL expression for a path whose stored kind the schema fixes.
    fn target(&mut self, path: &str) -> Option<(String, FieldType)> {
        let ty = self.schema.resolve(path).ok()?;
        if !matches!(
            ty,
            FieldType::String | FieldType::Timestamp | FieldType::Int | FieldType::Bool
        ) {
            return None;
        }
        if path == self.schema.key() {
            return Some((quote(self.schema.key()), ty));
        }
        if let Some(declared) = column(self.schema, path) {
            return Some((quote(declared), ty));
        }
        let p = self.sql.bind(Bind::Text(json_path(path)));
        Some((format!("json_extract(doc, {p})"), ty))
    }

    /// Binds `v` when it has the kind `ty` stores; `None` otherwise.
    fn value(&mut self, ty: FieldType, v: &Value) -> Option<String> {
        let b = match (ty, v) {
            (FieldType::String, Value::String(s)) => Bind::Text(s.clone()),
            (FieldType::Timestamp, Value::String(s)) => {
                // Canonical text orders like time; anything else goes to eval.
                let ts: Timestamp = s.parse().ok()?;
                if ts.to_text() != *s {
                    return None;
                }
                Bind::Text(s.clone())
            }
            (FieldType::Int, Value::Number(n)) => Bind::Int(n.as_i64()?),
            (FieldType::Bool, Value::Bool(b)) => Bind::Int(i64::from(*b)),
            _ => return None,
        };
        Some(self.sql.bind(b))
    }

    fn expr(&mut self, f: &Filter, neg: bool) -> Option<String> {
        Some(match f {
            Filter::All => if neg { "0" } else { "1" }.to_owned(),
            Filter::And(fs) | Filter::Or(fs) => {
                let is_and = matches!(f, Filter::And(_)) != neg;
                if fs.is_empty() {
                    return Some(if is_and { "1" } else { "0" }.to_owned());
                }
                let parts = fs
                    .iter()
                    .map(|g| self.expr(g, neg))
                    .collect::<Option<Vec<_>>>()?;
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
            Filter::ContainsCi(..) => return None,
        })
    }

    fn eq(&mut self, path: &str, v: &Value, neg: bool) -> Option<String> {
        let (e, ty) = self.target(path)?;
        if v.is_null() {
            return Some(format!("{e} IS {}NULL", if neg { "NOT " } else { "" }));
        }
        let p = self.value(ty, v)?;
        Some(if neg {
            format!("{e} IS NOT {p}")
        } else {
            format!("{e} = {p}")
        })
    }

    fn range(&mut self, path: &str, op: &str, v: &Value, neg: bool) -> Option<String> {
        let (e, ty) = self.target(path)?;
        let p = self.value(ty, v)?;
        let pos = format!("{e} {op} {p}");
        Some(if neg {
            format!("NOT coalesce({pos}, 0)")
        } else {
            pos
        })
    }

    fn is_in(&mut self, path: &str, vs: &[Value], neg: bool) -> Option<String> {
        if vs.is_empty() {
            return Some(if neg { "1" } else { "0" }.to_owned());
        }
        let (e, ty) = self.target(path)?;
        let has_null = vs.iter().any(Value::is_null);
        let mut placeholders = Vec::new();
        for v in vs.iter().filter(|v| !v.is_null()) {
            placeholders.push(self.value(ty, v)?);
        }
        let mut parts = Vec::new();
        if !placeholders.is_empty() {
            parts.push(format!("{e} IN ({})", placeholders.join(", ")));
        }
        if has_null {
            parts.push(format!("{e} IS NULL"));
        }
        let pos = format!("({})", parts.join(" OR "));
        Some(if neg {
            format!("NOT coalesce({pos}, 0)")
        } else {
            pos
        })
    }

    /// `ORDER BY` terms for the query's keys, the schema's default sort and the
    /// key, when SQL orders every one of them as the reference does; `None`
    /// sends the sort to the reference evaluator. SQLite puts NULL first
    /// ascending and last descending, as the reference does.
    pub(crate) fn order_by(&mut self, query: &Checked<Query>) -> Option<String> {
        let key = SortKey {
            path: self.schema.key().to_owned(),
            dir: SortDir::Asc,
        };
        let mut terms = Vec::new();
        for k in query
            .sort
            .iter()
            .chain(self.schema.default_sort())
            .chain([&key])
        {
            let (e, _) = self.target(&k.path)?;
            let dir = if k.dir == SortDir::Desc {
                "DESC"
            } else {
                "ASC"
            };
            terms.push(format!("{e} {dir}"));
        }
        Some(terms.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::{Field, ScalarType, json};
    use std::sync::LazyLock;

    static S: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("things", "id")
            .field(Field::new("name", FieldType::String).indexed())
            .field(Field::new("n", FieldType::Int))
            .field(Field::new("f", FieldType::Float))
            .field(Field::new("meta", FieldType::Json).optional())
            .field(Field::new("tags", FieldType::Set(ScalarType::String)))
            .build()
    });

    fn plan(f: Filter) -> (Plan, Sql) {
        let mut sql = Sql::new();
        let checked = S.check_filter(&f).unwrap();
        let plan = Translator {
            schema: &S,
            sql: &mut sql,
        }
        .plan(&checked);
        (plan, sql)
    }

    #[test]
    fn indexed_fields_use_their_column_and_others_json_extract() {
        let (p, sql) = plan(Filter::eq("name", "a").and(Filter::gt("n", 3)));
        assert_eq!(p.sql_where, "\"name\" = ?1 AND json_extract(doc, ?2) > ?3");
        assert_eq!(sql.binds[1], Bind::Text("$.\"n\"".into()));
        assert!(p.residual.is_none());
    }

    #[test]
    fn untranslatable_conjuncts_stay_for_the_evaluator() {
        let (p, sql) = plan(Filter::eq("name", "a").and(Filter::gt("f", 1.5)));
        assert_eq!(p.sql_where, "\"name\" = ?1");
        assert_eq!(sql.binds.len(), 1);
        assert_eq!(p.residual, Some(Filter::gt("f", 1.5)));
        let (p, _) = plan(Filter::contains_ci("name", "A"));
        assert_eq!(p.sql_where, "1");
    }

    #[test]
    fn negation_is_pushed_to_the_leaves() {
        let (p, _) = plan(Filter::eq("name", "a").or(Filter::lt("n", 2)).not());
        assert_eq!(
            p.sql_where,
            "(\"name\" IS NOT ?1 AND NOT coalesce(json_extract(doc, ?2) < ?3, 0))"
        );
    }

    #[test]
    fn caller_strings_never_reach_the_sql_text() {
        let evil = "x'); DROP TABLE things; --";
        let (p, _) = plan(Filter::all_of([
            Filter::eq("name", evil),
            Filter::is_in("name", [json!(evil), json!(null)]),
        ]));
        assert!(!p.sql_where.contains("DROP"), "{}", p.sql_where);
    }

    #[test]
    fn order_by_ends_with_the_key_or_defers_float_sorts() {
        let mut sql = Sql::new();
        let q = S.check_query(&Query::new().sort_desc("n")).unwrap();
        let order = Translator {
            schema: &S,
            sql: &mut sql,
        }
        .order_by(&q);
        assert_eq!(
            order.as_deref(),
            Some("json_extract(doc, ?1) DESC, \"id\" ASC")
        );
        let q = S.check_query(&Query::new().sort_asc("f")).unwrap();
        let order = Translator {
            schema: &S,
            sql: &mut sql,
        }
        .order_by(&q);
        assert_eq!(order, None);
    }
}
