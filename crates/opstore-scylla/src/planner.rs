//! Query planning that respects the data model.
//!
//! A filter is served by the table when one of its required conjuncts pins the
//! partition key (`eq`/`in` on the key) or an indexed column (`eq`/`in`). Every
//! other filter needs a scan: refused with `Unsupported` (naming the index that
//! would serve it) unless the caller opted into [`ScanPolicy::Bounded`], which
//! scans with `ALLOW FILTERING` and a row limit. In every case the whole filter is
//! re-evaluated in process by the reference evaluator, so pushed-down terms only
//! narrow what is read and never change results.

use opstore_domain::{FieldType, Filter, Result, StoreError, Value};

use crate::config::ScanPolicy;
use crate::table::{TableLayout, quote, scalar_to_cql};
use crate::value::CqlValue;

/// How rows are found.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// The filter can match nothing (a key compared with a non-string).
    Nothing,
    /// Partition lookups by key.
    Keys(Vec<String>),
    /// Secondary-index equality on a column, one query per value.
    Index {
        /// Field path (the column).
        path: String,
        /// Values to look up.
        values: Vec<CqlValue>,
    },
    /// A bounded `ALLOW FILTERING` scan.
    Scan {
        /// Pushed-down conditions: quoted column, operator, value.
        pushdown: Vec<(String, &'static str, CqlValue)>,
        /// Most rows the scan may read.
        max_rows: u64,
    },
}

/// A planned read.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// How rows are found.
    pub access: Access,
}

impl Plan {
    /// The statements (CQL and values) that read the candidate rows.
    pub fn statements(&self, layout: &TableLayout) -> Vec<(String, Vec<CqlValue>)> {
        match &self.access {
            Access::Nothing => Vec::new(),
            Access::Keys(keys) => keys
                .iter()
                .map(|k| (layout.select_by_key_cql(), vec![CqlValue::Text(k.clone())]))
                .collect(),
            Access::Index { path, values } => values
                .iter()
                .map(|v| {
                    (
                        format!(
                            "SELECT {} FROM {} WHERE {} = ?",
                            layout.select_list(),
                            layout.qualified(),
                            quote(path)
                        ),
                        vec![v.clone()],
                    )
                })
                .collect(),
            Access::Scan { pushdown, .. } => {
                let mut cql = format!(
                    "SELECT {} FROM {}",
                    layout.select_list(),
                    layout.qualified()
                );
                if !pushdown.is_empty() {
                    let terms: Vec<String> = pushdown
                        .iter()
                        .map(|(c, op, _)| format!("{c} {op} ?"))
                        .collect();
                    cql.push_str(" WHERE ");
                    cql.push_str(&terms.join(" AND "));
                    cql.push_str(" ALLOW FILTERING");
                }
                vec![(cql, pushdown.iter().map(|(_, _, v)| v.clone()).collect())]
            }
        }
    }

    /// Whether this plan scans.
    pub fn is_scan(&self) -> bool {
        matches!(self.access, Access::Scan { .. })
    }
}

fn conjuncts(filter: &Filter) -> Vec<&Filter> {
    match filter {
        Filter::And(fs) => fs.iter().flat_map(conjuncts).collect(),
        other => vec![other],
    }
}

fn paths<'a>(filter: &'a Filter, out: &mut Vec<&'a str>) {
    match filter {
        Filter::All => {}
        Filter::Eq(p, _)
        | Filter::Ne(p, _)
        | Filter::Gt(p, _)
        | Filter::Gte(p, _)
        | Filter::Lt(p, _)
        | Filter::Lte(p, _)
        | Filter::In(p, _)
        | Filter::Nin(p, _)
        | Filter::Exists(p, _)
        | Filter::ContainsCi(p, _) => {
            if !out.contains(&p.as_str()) {
                out.push(p);
            }
        }
        Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| paths(f, out)),
        Filter::Not(f) => paths(f, out),
    }
}

/// Exact CQL value for an index lookup on `path`, if the value can be stored there.
fn index_value(layout: &TableLayout, path: &str, v: &Value) -> Option<Option<CqlValue>> {
    let col = layout.column(path)?;
    let s = col.ty.scalar()?;
    if v.is_null() {
        return None;
    }
    // A value the column cannot hold (1.5 in an integer column) matches nothing.
    Some(scalar_to_cql(s, v).ok())
}

/// Plans the read of documents matching `filter` (already checked).
pub fn plan(layout: &TableLayout, filter: &Filter, policy: ScanPolicy, op: &str) -> Result<Plan> {
    let key = layout.schema.key();
    let terms = conjuncts(filter);
    for term in &terms {
        match term {
            Filter::Eq(p, v) if p == key => {
                return Ok(Plan {
                    access: match v.as_str() {
                        Some(k) => Access::Keys(vec![k.to_owned()]),
                        None => Access::Nothing,
                    },
                });
            }
            Filter::In(p, vs) if p == key => {
                let mut keys: Vec<String> = vs
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                keys.sort();
                keys.dedup();
                return Ok(Plan {
                    access: if keys.is_empty() {
                        Access::Nothing
                    } else {
                        Access::Keys(keys)
                    },
                });
            }
            _ => {}
        }
    }
    for term in &terms {
        let (path, values): (&String, Vec<&Value>) = match term {
            Filter::Eq(p, v) if !v.is_null() => (p, vec![v]),
            Filter::In(p, vs) if !vs.iter().any(Value::is_null) => (p, vs.iter().collect()),
            _ => continue,
        };
        if !layout.is_indexed(path) {
            continue;
        }
        let mut exact = Vec::new();
        let mut usable = true;
        for v in values {
            match index_value(layout, path, v) {
                Some(Some(c)) => {
                    if !exact.contains(&c) {
                        exact.push(c);
                    }
                }
                Some(None) => {}
                None => usable = false,
            }
        }
        if !usable {
            continue;
        }
        return Ok(Plan {
            access: if exact.is_empty() {
                Access::Nothing
            } else {
                Access::Index {
                    path: path.clone(),
                    values: exact,
                }
            },
        });
    }
    match policy {
        ScanPolicy::Strict => Err(unsupported(layout, filter, op)),
        ScanPolicy::Bounded { max_rows } => Ok(Plan {
            access: Access::Scan {
                pushdown: pushdown(layout, &terms),
                max_rows,
            },
        }),
    }
}

/// The `Unsupported` error for a filter no key or index serves.
pub fn unsupported(layout: &TableLayout, filter: &Filter, op: &str) -> StoreError {
    let mut used = Vec::new();
    paths(filter, &mut used);
    let candidates: Vec<&str> = used
        .into_iter()
        .filter(|p| {
            layout.schema.field(p).is_some_and(|f| {
                f.ty().is_sortable() && !f.is_indexed() && *p != layout.schema.key()
            })
        })
        .collect();
    let what = if conjuncts(filter).iter().all(|f| matches!(f, Filter::All)) {
        "matches every row, which is a full-table scan".to_owned()
    } else {
        "has no equality on the key or on an indexed field, so it needs a full-table scan"
            .to_owned()
    };
    let fix = if candidates.is_empty() {
        format!(
            "add an equality on the key `{}` or on an indexed field",
            layout.schema.key()
        )
    } else {
        format!(
            "declare `{}` indexed in the schema (Field::indexed) and run migrate, or add an equality on the key `{}`",
            candidates.join("`, `"),
            layout.schema.key()
        )
    };
    StoreError::Unsupported(format!(
        "{op} on `{}`: the filter {what} (capability filter_any_field). To serve it: {fix}; \
         or opt into ScanPolicy::Bounded {{ max_rows }} for a row-limited ALLOW FILTERING scan",
        layout.name()
    ))
}

/// Terms a scan can push to the server. Timestamps are stored in milliseconds, so
/// strict bounds on them are widened (the evaluator applies the exact bound).
fn pushdown(layout: &TableLayout, terms: &[&Filter]) -> Vec<(String, &'static str, CqlValue)> {
    let mut out = Vec::new();
    for term in terms {
        let (p, v, op) = match term {
            Filter::Eq(p, v) => (p, v, "="),
            Filter::Gt(p, v) => (p, v, ">"),
            Filter::Gte(p, v) => (p, v, ">="),
            Filter::Lt(p, v) => (p, v, "<"),
            Filter::Lte(p, v) => (p, v, "<="),
            _ => continue,
        };
        if v.is_null() || p == layout.schema.key() {
            continue;
        }
        let Some(col) = layout.column(p) else {
            continue;
        };
        let Some(s) = col.ty.scalar() else { continue };
        let Ok(value) = scalar_to_cql(s, v) else {
            continue;
        };
        let op = match (col.ty, op) {
            (FieldType::Timestamp, ">") => ">=",
            (FieldType::Timestamp, "<") => "<=",
            (FieldType::Timestamp, "<=") => "<=",
            (FieldType::Bool, "=") => "=",
            (FieldType::Bool, _) => continue,
            (_, op) => op,
        };
        out.push((col.ident(), op, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::{Field, Schema, json};
    use std::sync::LazyLock;

    static ITEMS: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("items", "id")
            .field(Field::new("name", FieldType::String).indexed())
            .field(Field::new("count", FieldType::Int))
            .field(Field::new("at", FieldType::Timestamp))
            .field(Field::new("active", FieldType::Bool))
            .field(Field::new("meta", FieldType::Json).optional())
            .build()
    });

    fn layout() -> TableLayout {
        TableLayout::new("ks", &ITEMS)
    }

    #[test]
    fn key_equality_and_in_are_partition_lookups() {
        let l = layout();
        let p = plan(
            &l,
            &Filter::eq("id", "a").and(Filter::gt("count", 1)),
            ScanPolicy::Strict,
            "find",
        )
        .unwrap();
        assert_eq!(p.access, Access::Keys(vec!["a".into()]));
        let stmts = p.statements(&l);
        assert_eq!(
            stmts[0].0,
            "SELECT \"id\", \"name\", \"count\", \"at\", \"active\", doc FROM ks.items WHERE \"id\" = ?"
        );
        let p = plan(
            &l,
            &Filter::is_in("id", ["b", "a", "b"]),
            ScanPolicy::Strict,
            "find",
        )
        .unwrap();
        assert_eq!(p.access, Access::Keys(vec!["a".into(), "b".into()]));
        let p = plan(&l, &Filter::eq("id", 3), ScanPolicy::Strict, "find").unwrap();
        assert_eq!(p.access, Access::Nothing);
        assert!(p.statements(&l).is_empty());
    }

    #[test]
    fn indexed_equality_is_served_by_the_index() {
        let l = layout();
        let f = Filter::all_of([Filter::contains_ci("meta.x", "q"), Filter::eq("name", "n1")]);
        let p = plan(&l, &f, ScanPolicy::Strict, "find").unwrap();
        assert_eq!(
            p.access,
            Access::Index {
                path: "name".into(),
                values: vec![CqlValue::Text("n1".into())]
            }
        );
        assert_eq!(
            p.statements(&l)[0].0,
            "SELECT \"id\", \"name\", \"count\", \"at\", \"active\", doc FROM ks.items WHERE \"name\" = ?"
        );
        let p = plan(
            &l,
            &Filter::is_in("name", ["a", "b"]),
            ScanPolicy::Strict,
            "find",
        )
        .unwrap();
        assert_eq!(p.statements(&l).len(), 2);
    }

    #[test]
    fn unserved_filters_are_unsupported_with_the_fix() {
        let l = layout();
        let err = plan(&l, &Filter::gt("count", 3), ScanPolicy::Strict, "find").unwrap_err();
        assert!(err.is_unsupported());
        let m = err.to_string();
        assert!(m.contains("find on `items`"), "{m}");
        assert!(m.contains("filter_any_field"), "{m}");
        assert!(m.contains("declare `count` indexed"), "{m}");
        assert!(m.contains("ScanPolicy::Bounded"), "{m}");
        let err = plan(&l, &Filter::All, ScanPolicy::Strict, "count").unwrap_err();
        assert!(err.to_string().contains("matches every row"), "{err}");
        // An index term under `or` or `not` does not pin the index.
        let f = Filter::eq("name", "a").or(Filter::eq("name", "b"));
        assert!(
            plan(&l, &f, ScanPolicy::Strict, "find")
                .unwrap_err()
                .is_unsupported()
        );
        let f = Filter::eq("name", "a").not();
        assert!(
            plan(&l, &f, ScanPolicy::Strict, "find")
                .unwrap_err()
                .is_unsupported()
        );
        // Null equality matches absent fields, which no index holds.
        assert!(
            plan(
                &l,
                &Filter::eq("name", json!(null)),
                ScanPolicy::Strict,
                "find"
            )
            .is_err()
        );
    }

    #[test]
    fn bounded_scans_push_down_exact_terms_with_allow_filtering() {
        let l = layout();
        let policy = ScanPolicy::Bounded { max_rows: 100 };
        let f = Filter::all_of([
            Filter::gt("count", 3),
            Filter::lt("at", "2026-01-01T00:00:00.000500Z"),
            Filter::eq("active", true),
            Filter::ne("count", 5),
            Filter::eq("meta.a", 1),
            Filter::gt("count", 1.5),
        ]);
        let p = plan(&l, &f, policy, "find").unwrap();
        let stmts = p.statements(&l);
        assert_eq!(
            stmts[0].0,
            "SELECT \"id\", \"name\", \"count\", \"at\", \"active\", doc FROM ks.items \
             WHERE \"count\" > ? AND \"at\" <= ? AND \"active\" = ? ALLOW FILTERING"
        );
        assert_eq!(
            stmts[0].1,
            vec![
                CqlValue::BigInt(3),
                CqlValue::Timestamp(1_767_225_600_000),
                CqlValue::Boolean(true)
            ]
        );
        assert!(p.is_scan());
        let p = plan(&l, &Filter::All, policy, "find").unwrap();
        assert_eq!(
            p.statements(&l)[0].0,
            "SELECT \"id\", \"name\", \"count\", \"at\", \"active\", doc FROM ks.items"
        );
    }

    #[test]
    fn values_an_index_column_cannot_hold_match_nothing() {
        static NUMS: LazyLock<Schema> = LazyLock::new(|| {
            Schema::builder("nums", "id")
                .field(Field::new("n", FieldType::Int).indexed())
                .build()
        });
        let l = TableLayout::new("ks", &NUMS);
        let p = plan(&l, &Filter::eq("n", 1.5), ScanPolicy::Strict, "find").unwrap();
        assert_eq!(p.access, Access::Nothing);
        let p = plan(&l, &Filter::eq("n", 2.0), ScanPolicy::Strict, "find").unwrap();
        assert_eq!(
            p.access,
            Access::Index {
                path: "n".into(),
                values: vec![CqlValue::BigInt(2)]
            }
        );
    }
}
