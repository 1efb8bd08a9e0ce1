//! Hostile inputs for the statement-structure property tests of every adapter.
//!
//! The property: no caller value changes the structure of a generated statement.
//! Each case generates a checked filter, update or query over [`schema`] (one
//! field of every portable type) whose values are hostile: quotes, comments,
//! `$`-operators, dots, NUL, Unicode, huge strings, i64 extremes and finite
//! float extremes. [`Neutral`] maps the same shape to harmless values of the same
//! kinds, distinct where the originals are distinct. An adapter test translates
//! both and compares the statement text (SQL, CQL) or the BSON key skeleton,
//! which must be identical: values are bound parameters or BSON values, never text.
//!
//! Available with the `hostile` feature.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use opstore_domain::{
    Field, FieldType, Filter, Query, ScalarType, Schema, SortDir, SortKey, Timestamp, Update,
    UpdateOp, Value,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases of a bounded run; `OPSTORE_SOAK_CASES` raises it.
pub const DEFAULT_CASES: u32 = 256;

/// The number of cases to run: `OPSTORE_SOAK_CASES` when set, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    std::env::var("OPSTORE_SOAK_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CASES)
}

/// A proptest configuration running [`cases`] cases without writing regression files.
pub fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `check` on [`cases`] inputs drawn from `strategy` and prints one summary
/// line; returns how many inputs the checker accepted (it returns `false` for
/// inputs it cannot judge, such as a shape the translator refuses).
///
/// # Panics
///
/// On the first failing case, with proptest's minimized input, naming
/// `backend` and `what`: this is a test driver.
pub fn run<S: Strategy>(
    backend: &str,
    what: &str,
    strategy: S,
    check: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u32
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config());
    let accepted = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |input| {
        if check(input)? {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{backend} statement structure ({what}): {e}");
    }
    println!(
        "{backend} statement structure ({what}): {} cases, {} accepted by the checker, 0 failures",
        cases(),
        accepted.get()
    );
    accepted.get()
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("hostile_docs", "id")
        .field(Field::new("name", FieldType::String).indexed())
        .field(Field::new("count", FieldType::Int).indexed())
        .field(Field::new("price", FieldType::Float))
        .field(Field::new("active", FieldType::Bool))
        .field(Field::new("at", FieldType::Timestamp))
        .field(Field::new("note", FieldType::String).optional())
        .field(Field::new("meta", FieldType::Json).optional())
        .field(Field::new("tags", FieldType::List(ScalarType::String)).optional())
        .field(Field::new("roles", FieldType::Set(ScalarType::String)).optional())
        .field(Field::new("labels", FieldType::Map(ScalarType::String)).optional())
        .field(Field::new("nested", FieldType::Object).optional())
        .field(Field::new("nested.x", FieldType::String).optional())
        .field(Field::new("nested.n", FieldType::Int).optional())
        .ttl("at", Duration::from_secs(24 * 3600))
        .default_sort("at", SortDir::Desc)
        .build()
});

/// The schema of every case: each portable field type, an indexed string and
/// integer, a TTL, a default sort, a nested object, a map and free-form JSON.
pub fn schema() -> &'static Schema {
    &SCHEMA
}

/// Paths a filter may name, with the type each resolves to.
const FILTER_PATHS: [(&str, FieldType); 16] = [
    ("id", FieldType::String),
    ("name", FieldType::String),
    ("count", FieldType::Int),
    ("price", FieldType::Float),
    ("active", FieldType::Bool),
    ("at", FieldType::Timestamp),
    ("note", FieldType::String),
    ("meta", FieldType::Json),
    ("meta.x", FieldType::Json),
    ("meta.y.z", FieldType::Json),
    ("tags", FieldType::List(ScalarType::String)),
    ("roles", FieldType::Set(ScalarType::String)),
    ("labels", FieldType::Map(ScalarType::String)),
    ("labels.env", FieldType::String),
    ("nested.x", FieldType::String),
    ("nested.n", FieldType::Int),
];

/// Paths a sort may name.
const SORT_PATHS: [&str; 9] = [
    "id", "name", "count", "price", "active", "at", "note", "meta.x", "nested.n",
];

/// Strings an attacker would try, plus Unicode and size extremes.
pub fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "", "'", "''", "\"", "`", "\\", "\\'", "'; DROP TABLE hostile_docs; --",
            "\" OR 1=1 --", "' OR '1'='1", "/* comment */", "-- tail", "#", ";", "?", "$1",
            "$2::text", ":name", "%", "_", "%_\\", "\0", "a\0b", "$gt", "$where", "$ne",
            "$$NOW", "$expr", "{\"$gt\": \"\"}", "a.b", ".", "..", "$", "__proto__",
            "日本語", "😀", "e\u{301}", "\u{202e}rtl", "\u{feff}", "\u{10ffff}", "\r\n",
            "ALLOW FILTERING", "IF EXISTS", "USING TTL 1", "); DELETE FROM x WHERE (1=1",
        ])
        .prop_map(str::to_owned),
        3 => any::<String>(),
        1 => Just("'\"$\0".repeat(25_000)),
        1 => Just("é".repeat(70_000)),
    ]
}

fn hostile_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            i64::MAX - 1,
            i64::MAX
        ]),
        any::<i64>(),
    ]
}

fn hostile_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            f64::MIN,
            1e300,
            0.1 + 0.2,
            9_007_199_254_740_993.0,
        ]),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ]
}

fn hostile_timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            -62_135_596_800_000_000i64,
            253_402_300_799_999_999,
            0,
            -1,
            1_767_225_600_000_001,
        ]),
        -62_135_596_800_000_000..253_402_300_799_999_999i64,
    ]
    .prop_map(|m| Timestamp::from_micros(m).to_text())
}

/// Object keys inside free-form values: data, but tempting as operators or paths.
fn hostile_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "x", "$gt", "$where", "a.b", "", "\0", "日本", "'", "$"
        ])
        .prop_map(str::to_owned),
        "[a-z$.]{1,6}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        hostile_int().prop_map(Value::from),
        hostile_float().prop_map(Value::from),
        hostile_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(hostile_key(), inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value that fits `ty` (a filter operand or a written value).
pub fn value_of(ty: FieldType) -> BoxedStrategy<Value> {
    let strings = || prop::collection::vec(hostile_text().prop_map(Value::from), 0..4);
    match ty {
        FieldType::String => hostile_text().prop_map(Value::from).boxed(),
        FieldType::Int => hostile_int().prop_map(Value::from).boxed(),
        FieldType::Float => prop_oneof![
            3 => hostile_float().prop_map(Value::from),
            1 => hostile_int().prop_map(Value::from),
        ]
        .boxed(),
        FieldType::Bool => any::<bool>().prop_map(Value::from).boxed(),
        FieldType::Timestamp => hostile_timestamp().prop_map(Value::from).boxed(),
        FieldType::Json => json_value().boxed(),
        FieldType::List(_) | FieldType::Set(_) => strings().prop_map(Value::Array).boxed(),
        FieldType::Map(_) => {
            prop::collection::btree_map(hostile_key(), hostile_text().prop_map(Value::from), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
                .boxed()
        }
        FieldType::Object => hostile_text()
            .prop_map(|x| serde_json::json!({ "x": x }))
            .boxed(),
    }
}

/// A scalar comparable by range on `ty`.
fn range_value(ty: FieldType) -> BoxedStrategy<Value> {
    match ty {
        FieldType::Json => prop_oneof![
            hostile_text().prop_map(Value::from),
            hostile_int().prop_map(Value::from),
            hostile_float().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ]
        .boxed(),
        other => value_of(other),
    }
}

/// One comparison on one path with a hostile operand.
pub fn leaf() -> impl Strategy<Value = Filter> {
    prop::sample::select(FILTER_PATHS.to_vec()).prop_flat_map(|(path, ty)| {
        let p = path.to_owned();
        let sortable = ty.is_sortable() || ty == FieldType::Json;
        let textual = matches!(ty, FieldType::String | FieldType::Json);
        let mut options: Vec<BoxedStrategy<Filter>> = vec![
            (value_of(ty), any::<bool>())
                .prop_map({
                    let p = p.clone();
                    move |(v, ne)| {
                        if ne {
                            Filter::Ne(p.clone(), v)
                        } else {
                            Filter::Eq(p.clone(), v)
                        }
                    }
                })
                .boxed(),
            (
                prop::collection::vec(value_of(ty), 0..4),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map({
                    let p = p.clone();
                    move |(mut vs, null, nin)| {
                        if null {
                            vs.push(Value::Null);
                        }
                        if nin {
                            Filter::Nin(p.clone(), vs)
                        } else {
                            Filter::In(p.clone(), vs)
                        }
                    }
                })
                .boxed(),
            any::<bool>()
                .prop_map({
                    let p = p.clone();
                    move |b| Filter::Exists(p.clone(), b)
                })
                .boxed(),
            Just(Filter::Eq(p.clone(), Value::Null)).boxed(),
        ];
        if sortable {
            options.push(
                (range_value(ty), 0..4u8)
                    .prop_map({
                        let p = p.clone();
                        move |(v, op)| match op {
                            0 => Filter::Gt(p.clone(), v),
                            1 => Filter::Gte(p.clone(), v),
                            2 => Filter::Lt(p.clone(), v),
                            _ => Filter::Lte(p.clone(), v),
                        }
                    })
                    .boxed(),
            );
        }
        if textual {
            options.push(
                hostile_text()
                    .prop_map(move |n| Filter::ContainsCi(p.clone(), n))
                    .boxed(),
            );
        }
        prop::strategy::Union::new(options)
    })
}

/// A filter of up to three levels of `and`, `or` and `not` over hostile leaves.
pub fn filter() -> impl Strategy<Value = Filter> {
    prop_oneof![4 => leaf(), 1 => Just(Filter::All)].prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::And),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::Or),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

/// A conjunction of one to four leaves: the shape a planner pushes down to the
/// server term by term.
pub fn conjunction() -> impl Strategy<Value = Filter> {
    prop::collection::vec(leaf(), 1..5).prop_map(Filter::And)
}

/// Fields an update may write, with their types and whether they may be unset.
const UPDATE_PATHS: [(&str, FieldType, bool); 13] = [
    ("name", FieldType::String, false),
    ("count", FieldType::Int, false),
    ("price", FieldType::Float, false),
    ("active", FieldType::Bool, false),
    ("at", FieldType::Timestamp, false),
    ("note", FieldType::String, true),
    ("meta", FieldType::Json, true),
    ("tags", FieldType::List(ScalarType::String), true),
    ("roles", FieldType::Set(ScalarType::String), true),
    ("labels", FieldType::Map(ScalarType::String), true),
    ("nested.x", FieldType::String, true),
    ("nested.n", FieldType::Int, true),
    ("labels.env", FieldType::String, true),
];

fn update_op(path: &'static str, ty: FieldType, optional: bool) -> BoxedStrategy<UpdateOp> {
    let p = path.to_owned();
    let mut options: Vec<BoxedStrategy<UpdateOp>> = vec![
        value_of(ty)
            .prop_map({
                let p = p.clone();
                move |v| UpdateOp::Set(p.clone(), v)
            })
            .boxed(),
        value_of(ty)
            .prop_map({
                let p = p.clone();
                move |v| UpdateOp::SetOnInsert(p.clone(), v)
            })
            .boxed(),
    ];
    if optional {
        options.push(Just(UpdateOp::Unset(p.clone())).boxed());
    }
    match ty {
        FieldType::Int => options.push(
            hostile_int()
                .prop_map({
                    let p = p.clone();
                    move |i| UpdateOp::Inc(p.clone(), Value::from(i))
                })
                .boxed(),
        ),
        FieldType::Float => options.push(
            hostile_float()
                .prop_map({
                    let p = p.clone();
                    move |f| UpdateOp::Inc(p.clone(), Value::from(f))
                })
                .boxed(),
        ),
        FieldType::List(_) | FieldType::Set(_) => options.push(
            hostile_text()
                .prop_map({
                    let p = p.clone();
                    move |s| UpdateOp::Push(p.clone(), Value::from(s))
                })
                .boxed(),
        ),
        _ => {}
    }
    prop::strategy::Union::new(options).boxed()
}

/// An update of one to four operators on distinct, non-overlapping fields.
pub fn update() -> impl Strategy<Value = Update> {
    prop::sample::subsequence(UPDATE_PATHS.to_vec(), 1..5)
        .prop_filter("labels and labels.env overlap", |fields| {
            !(fields.iter().any(|f| f.0 == "labels") && fields.iter().any(|f| f.0 == "labels.env"))
        })
        .prop_flat_map(|fields| {
            fields
                .into_iter()
                .map(|(p, ty, optional)| update_op(p, ty, optional))
                .collect::<Vec<_>>()
        })
        .prop_map(|ops| Update { ops })
}

/// Sort keys over sortable paths.
pub fn sort() -> impl Strategy<Value = Vec<SortKey>> {
    prop::collection::vec(
        (prop::sample::select(SORT_PATHS.to_vec()), any::<bool>()).prop_map(|(p, desc)| SortKey {
            path: p.to_owned(),
            dir: if desc { SortDir::Desc } else { SortDir::Asc },
        }),
        0..4,
    )
}

/// A query: hostile filter, sort, and skip/limit including the extremes.
pub fn query() -> impl Strategy<Value = Query> {
    let count = || {
        prop_oneof![
            4 => Just(0u64),
            4 => 1..100u64,
            1 => Just(i64::MAX as u64),
            1 => Just(u64::MAX),
        ]
    };
    (filter(), sort(), count(), count()).prop_map(|(filter, sort, skip, limit)| Query {
        filter,
        sort,
        skip,
        limit,
    })
}

/// Maps caller values to harmless ones of the same kind, keeping distinct values
/// distinct and equal values equal, so a translation of the neutral twin takes the
/// same decisions (deduplication, null handling, integer vs float) as the original.
///
/// Object keys inside values are kept: they are the value's own structure.
#[derive(Debug, Default)]
pub struct Neutral {
    seen: HashMap<(u8, String), Value>,
}

impl Neutral {
    /// A fresh mapping.
    pub fn new() -> Self {
        Neutral::default()
    }

    fn fresh(&mut self, kind: u8, original: String, make: impl FnOnce(usize) -> Value) -> Value {
        let n = self.seen.len();
        self.seen
            .entry((kind, original))
            .or_insert_with(|| make(n))
            .clone()
    }

    /// The neutral twin of `v`, written at or compared with a field of type `ty`.
    pub fn value(&mut self, ty: FieldType, v: &Value) -> Value {
        match v {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(*b),
            Value::Number(n) if n.is_f64() => {
                self.fresh(1, v.to_string(), |i| Value::from(i as f64 + 0.5))
            }
            Value::Number(_) => self.fresh(2, v.to_string(), |i| Value::from(i as i64)),
            Value::String(s) if ty == FieldType::Timestamp => self.fresh(3, s.clone(), |i| {
                Value::from(Timestamp::from_millis(946_684_800_000 + i as i64 * 1000).to_text())
            }),
            Value::String(s) => self.fresh(4, s.clone(), |i| Value::from(format!("n{i}"))),
            Value::Array(items) => {
                let inner = match ty {
                    FieldType::List(s) | FieldType::Set(s) => scalar(s),
                    other => other,
                };
                Value::Array(items.iter().map(|i| self.value(inner, i)).collect())
            }
            Value::Object(m) => {
                let inner = match ty {
                    FieldType::Map(s) => scalar(s),
                    _ => FieldType::Json,
                };
                Value::Object(
                    m.iter()
                        .map(|(k, v)| (k.clone(), self.value(inner, v)))
                        .collect(),
                )
            }
        }
    }

    /// The filter with every value replaced by its neutral twin.
    pub fn filter(&mut self, schema: &Schema, f: &Filter) -> Filter {
        let ty = |p: &str| schema.resolve(p).unwrap_or(FieldType::Json);
        match f {
            Filter::All => Filter::All,
            Filter::Eq(p, v) => Filter::Eq(p.clone(), self.value(ty(p), v)),
            Filter::Ne(p, v) => Filter::Ne(p.clone(), self.value(ty(p), v)),
            Filter::Gt(p, v) => Filter::Gt(p.clone(), self.value(ty(p), v)),
            Filter::Gte(p, v) => Filter::Gte(p.clone(), self.value(ty(p), v)),
            Filter::Lt(p, v) => Filter::Lt(p.clone(), self.value(ty(p), v)),
            Filter::Lte(p, v) => Filter::Lte(p.clone(), self.value(ty(p), v)),
            Filter::In(p, vs) => {
                Filter::In(p.clone(), vs.iter().map(|v| self.value(ty(p), v)).collect())
            }
            Filter::Nin(p, vs) => {
                Filter::Nin(p.clone(), vs.iter().map(|v| self.value(ty(p), v)).collect())
            }
            Filter::Exists(p, b) => Filter::Exists(p.clone(), *b),
            Filter::ContainsCi(p, needle) => {
                let n = self.value(FieldType::String, &Value::from(needle.as_str()));
                Filter::ContainsCi(p.clone(), n.as_str().unwrap_or_default().to_owned())
            }
            Filter::And(fs) => Filter::And(fs.iter().map(|g| self.filter(schema, g)).collect()),
            Filter::Or(fs) => Filter::Or(fs.iter().map(|g| self.filter(schema, g)).collect()),
            Filter::Not(g) => Filter::Not(Box::new(self.filter(schema, g))),
        }
    }

    /// The update with every value replaced by its neutral twin.
    pub fn update(&mut self, schema: &Schema, u: &Update) -> Update {
        let ty = |p: &str| schema.resolve(p).unwrap_or(FieldType::Json);
        let ops = u
            .ops
            .iter()
            .map(|op| match op {
                UpdateOp::Set(p, v) => UpdateOp::Set(p.clone(), self.value(ty(p), v)),
                UpdateOp::SetOnInsert(p, v) => {
                    UpdateOp::SetOnInsert(p.clone(), self.value(ty(p), v))
                }
                UpdateOp::Unset(p) => UpdateOp::Unset(p.clone()),
                UpdateOp::Inc(p, v) => UpdateOp::Inc(p.clone(), self.value(ty(p), v)),
                UpdateOp::Push(p, v) => {
                    let element = match ty(p) {
                        FieldType::List(s) | FieldType::Set(s) => scalar(s),
                        other => other,
                    };
                    UpdateOp::Push(p.clone(), self.value(element, v))
                }
            })
            .collect();
        Update { ops }
    }
}

fn scalar(s: ScalarType) -> FieldType {
    match s {
        ScalarType::String => FieldType::String,
        ScalarType::Int => FieldType::Int,
        ScalarType::Float => FieldType::Float,
        ScalarType::Bool => FieldType::Bool,
        ScalarType::Timestamp => FieldType::Timestamp,
    }
}

/// Every string a caller supplied in `f` (values and needles), for checks that
/// none of them reaches statement text.
pub fn filter_strings(f: &Filter, out: &mut Vec<String>) {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            Value::Object(m) => m.values().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    match f {
        Filter::All | Filter::Exists(..) => {}
        Filter::Eq(_, v)
        | Filter::Ne(_, v)
        | Filter::Gt(_, v)
        | Filter::Gte(_, v)
        | Filter::Lt(_, v)
        | Filter::Lte(_, v) => collect(v, out),
        Filter::In(_, vs) | Filter::Nin(_, vs) => vs.iter().for_each(|v| collect(v, out)),
        Filter::ContainsCi(_, n) => out.push(n.clone()),
        Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|g| filter_strings(g, out)),
        Filter::Not(g) => filter_strings(g, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn generated_inputs_mostly_pass_the_checker() {
        let mut runner = TestRunner::new(config());
        let (mut filters, mut updates) = (0, 0);
        for _ in 0..200 {
            let f = filter().new_tree(&mut runner).unwrap().current();
            filters += usize::from(schema().check_filter(&f).is_ok());
            let u = update().new_tree(&mut runner).unwrap().current();
            updates += usize::from(schema().check_update(&u).is_ok());
        }
        assert!(filters > 150, "{filters} of 200 filters passed the checker");
        assert!(updates > 150, "{updates} of 200 updates passed the checker");
    }

    #[test]
    fn neutral_twins_keep_shape_and_distinctness() {
        let mut n = Neutral::new();
        let f = Filter::In(
            "name".into(),
            vec![
                Value::from("'"),
                Value::from("$gt"),
                Value::from("'"),
                Value::Null,
            ],
        );
        let twin = n.filter(schema(), &f);
        assert_eq!(
            twin,
            Filter::In(
                "name".into(),
                vec![
                    Value::from("n0"),
                    Value::from("n1"),
                    Value::from("n0"),
                    Value::Null
                ]
            )
        );
        assert!(schema().check_filter(&twin).is_ok());
        let at = n.value(
            FieldType::Timestamp,
            &Value::from("2026-01-01T00:00:00.000000Z"),
        );
        assert!(schema().check_filter(&Filter::Eq("at".into(), at)).is_ok());
    }
}
