//! Differential property tests: random operation sequences run on the memory
//! store (the reference semantics) and on each real backend must produce the same
//! observable results: documents, counts, aggregates and error kinds.
//!
//! Every case runs on fresh stores (a PostgreSQL schema, MongoDB database or
//! SQLite file of its own). `OPSTORE_SOAK_CASES` sets the number of cases (default 256 per backend).
//! Float sums are compared with a relative tolerance of 1e-9, because addition
//! order is not part of the contract; everything else is compared exactly.

use std::fmt;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use opstore_domain::{
    Agg, Collection, Filter, Query, Result, Schema, SortDir, SortKey, Timestamp, Update, UpdateOp,
    Value, json,
};
use opstore_e2e::{Backend, IsolatedStore, error_kind, same_value};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// Cases per backend in a bounded run.
const DEFAULT_CASES: u32 = 256;

static DOCS: LazyLock<&'static Schema> = LazyLock::new(opstore_e2e::docs_schema);

// ---------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0..6u8).prop_map(|i| format!("k{i}")),
        1 => prop::sample::select(vec!["K0", "ключ", "k 1", "😀", "a'b", "x\"y"]).prop_map(str::to_owned),
        1 => Just("k".repeat(512)),
    ]
}

/// Strings with case, Unicode and length edge cases.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "", "a", "A", "b", "B", "ab", "Ab", "aB", "a b", "z", "Z", "é", "É", "e\u{301}",
            "日本", "😀", "ß", "SS", "ς", "Σ", "σ", "K", "\u{212a}", "İ", "i", "a%b", "a_b", "\\",
            "'", "10", "9", "-", "~", "\u{ffff}", "\u{10ffff}",
        ])
        .prop_map(str::to_owned),
        2 => "[a-cA-C ]{0,4}",
        1 => Just("long-".repeat(2000)),
        1 => Just("é".repeat(3000)),
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -3..4i64,
        1 => prop::sample::select(vec![
            i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, 1 << 53, (1 << 53) + 1,
            -(1 << 53) - 1, i64::from(i32::MAX) + 1,
        ]),
        1 => any::<i64>(),
    ]
}

/// Integers far from the i64 limits, for fields that are incremented.
fn moderate_int() -> impl Strategy<Value = i64> {
    prop_oneof![4 => -3..4i64, 1 => prop::sample::select(vec![1 << 53, (1 << 53) + 1, -(1 << 53) - 1])]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0.0, -0.0, 0.1, 0.2, 0.3, 0.1 + 0.2, 1.0, 1.0 + f64::EPSILON, 1.0 - f64::EPSILON / 2.0,
            2.5, -2.5, 1e-300, 5e-324, 1e300, f64::MAX, f64::MIN, 9_007_199_254_740_993.0,
            1e15 + 0.5,
        ]),
        2 => (-30..30i32).prop_map(|i| f64::from(i) / 4.0),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ]
}

/// A float field's value: a float, or sometimes an integer.
fn float_value() -> impl Strategy<Value = Value> {
    prop_oneof![4 => float().prop_map(Value::from), 1 => (-3..4i64).prop_map(Value::from)]
}

/// Canonical timestamp text, including sub-millisecond parts and range ends.
fn timestamp() -> impl Strategy<Value = String> {
    let base = 1_767_225_600_000_000i64;
    prop_oneof![
        3 => (-3..4i64).prop_map(move |d| base + d),
        2 => (-3..4i64).prop_map(move |d| base + d * 1000 + 999),
        1 => prop::sample::select(vec![0i64, -1, 1, -62_135_596_800_000_000, 253_402_300_799_999_999]),
        1 => -62_135_596_800_000_000..253_402_300_799_999_999i64,
    ]
    .prop_map(|m| Timestamp::from_micros(m).to_text())
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        int().prop_map(Value::from),
        float().prop_map(Value::from),
        text().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::btree_map(
                prop::sample::select(vec!["x", "y", "z", "cnt", "Z", "日本"]),
                inner.clone(),
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            prop::collection::vec(inner, 0..3).prop_map(Value::Array),
        ]
    })
}

/// A JSON value that is not itself an array (arrays may sit deeper).
fn json_non_array() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not an array", |v| !v.is_array())
}

/// `meta`: an object with addressable `x`, `y.z` and `cnt` paths. The filtered
/// paths never hold arrays: MongoDB matches a filter on an array path against
/// each element, a documented difference (`filter_on_a_json_array_*`).
fn meta() -> impl Strategy<Value = Value> {
    (
        optional(json_non_array()),
        optional(json_non_array()),
        optional(moderate_int().prop_map(Value::from)),
    )
        .prop_map(|(x, z, cnt)| {
            let mut m = json!({});
            put(&mut m, "x", x);
            if let Some(z) = z {
                m["y"] = json!({ "z": z.unwrap_or(Value::Null) });
            }
            put(&mut m, "cnt", cnt);
            m
        })
}

/// Absent (`None`), null (`Some(None)`) or a value.
fn optional<S: Strategy<Value = Value>>(s: S) -> impl Strategy<Value = Option<Option<Value>>> {
    prop_oneof![2 => Just(None), 1 => Just(Some(None)), 3 => s.prop_map(|v| Some(Some(v)))]
}

fn put(doc: &mut Value, field: &str, v: Option<Option<Value>>) {
    if let Some(v) = v {
        doc[field] = v.unwrap_or(Value::Null);
    }
}

fn nested() -> impl Strategy<Value = Value> {
    (
        text(),
        optional(int().prop_map(Value::from)),
        optional(timestamp().prop_map(Value::from)),
    )
        .prop_map(|(a, b, t)| {
            let mut n = json!({ "a": a });
            put(&mut n, "b", b);
            put(&mut n, "t", t);
            n
        })
}

fn code() -> impl Strategy<Value = Value> {
    prop::sample::select(vec!["c1", "c2", "C1", ""]).prop_map(Value::from)
}

/// A document with key `id`: every field sometimes absent, null or set.
fn document(id: String) -> impl Strategy<Value = Value> {
    (
        (text(), int(), optional(code()), optional(float_value())),
        (
            optional(any::<bool>().prop_map(Value::from)),
            optional(timestamp().prop_map(Value::from)),
            optional(text().prop_map(Value::from)),
            optional(prop::collection::vec(text(), 0..3).prop_map(|v| json!(v))),
        ),
        (
            optional(prop::collection::btree_set(int(), 0..3).prop_map(|v| json!(v))),
            optional(
                prop::collection::btree_map(
                    prop::sample::select(vec!["team", "env", "Team"]),
                    text(),
                    0..3,
                )
                .prop_map(|m| json!(m)),
            ),
            // `meta` is sometimes a scalar, so writes below it replace it.
            optional(prop_oneof![4 => meta(), 1 => json_scalar()]),
            nested(),
        ),
    )
        .prop_map(
            move |((name, n, code, f), (flag, at, note, tags), (nums, labels, meta, nested))| {
                let mut d = json!({ "id": id.clone(), "name": name, "n": n });
                put(&mut d, "code", code);
                put(&mut d, "f", f);
                put(&mut d, "flag", flag);
                put(&mut d, "at", at);
                put(&mut d, "note", note);
                put(&mut d, "tags", tags);
                put(&mut d, "nums", nums);
                put(&mut d, "labels", labels);
                put(&mut d, "meta", meta);
                d["nested"] = nested;
                d
            },
        )
}

fn any_document() -> impl Strategy<Value = Value> {
    key().prop_flat_map(document)
}

// ---------------------------------------------------------------------------------
// Paths, filters, updates, queries
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Key,
    Str,
    Code,
    Int,
    Float,
    Bool,
    Ts,
    StrList,
    IntSet,
    StrMap,
    Json,
    Obj,
}

const PATHS: &[(&str, Kind)] = &[
    ("id", Kind::Key),
    ("name", Kind::Str),
    ("code", Kind::Code),
    ("n", Kind::Int),
    ("f", Kind::Float),
    ("flag", Kind::Bool),
    ("at", Kind::Ts),
    ("note", Kind::Str),
    ("tags", Kind::StrList),
    ("nums", Kind::IntSet),
    ("labels", Kind::StrMap),
    ("labels.team", Kind::Str),
    ("meta", Kind::Json),
    ("meta.x", Kind::Json),
    ("meta.y.z", Kind::Json),
    ("meta.cnt", Kind::Json),
    ("nested", Kind::Obj),
    ("nested.a", Kind::Str),
    ("nested.b", Kind::Int),
    ("nested.t", Kind::Ts),
];

fn is_scalar(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::StrList | Kind::IntSet | Kind::StrMap | Kind::Obj | Kind::Json
    )
}

/// A value of the path's kind.
fn value_of(kind: Kind) -> BoxedStrategy<Value> {
    match kind {
        Kind::Key => key().prop_map(Value::from).boxed(),
        Kind::Str => text().prop_map(Value::from).boxed(),
        Kind::Code => code().boxed(),
        Kind::Int => int().prop_map(Value::from).boxed(),
        Kind::Float => float_value().boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::from).boxed(),
        Kind::Ts => timestamp().prop_map(Value::from).boxed(),
        Kind::StrList => prop::collection::vec(text(), 0..3)
            .prop_map(|v| json!(v))
            .boxed(),
        Kind::IntSet => prop::collection::btree_set(int(), 0..3)
            .prop_map(|v| json!(v))
            .boxed(),
        Kind::StrMap => prop::collection::btree_map("[a-z]{1,3}", text(), 0..2)
            .prop_map(|m| json!(m))
            .boxed(),
        Kind::Json => json_non_array().boxed(),
        Kind::Obj => nested().boxed(),
    }
}

/// A comparison operand for the path's kind: mostly scalars, sometimes null or a
/// value of the wrong type (both must be judged alike).
fn operand(kind: Kind) -> BoxedStrategy<Value> {
    let scalar = match kind {
        Kind::Json => json_scalar().boxed(),
        Kind::StrList | Kind::IntSet | Kind::StrMap | Kind::Obj => value_of(kind),
        k => value_of(k),
    };
    prop_oneof![
        8 => scalar,
        1 => Just(Value::Null),
        1 => prop_oneof![Just(json!("1")), Just(json!(1)), Just(json!(true))],
    ]
    .boxed()
}

fn path() -> impl Strategy<Value = (&'static str, Kind)> {
    prop::sample::select(PATHS)
}

fn leaf_filter() -> impl Strategy<Value = Filter> {
    path().prop_flat_map(|(p, kind)| {
        let p = p.to_owned();
        // Needles stay short: the MongoDB-wire test server caps regular
        // expressions at 1,000 characters (`contains_with_a_very_long_needle_*`).
        let needle = prop_oneof![
            text().prop_filter("short needle", |s| s.len() <= 200),
            prop::sample::select(vec!["a", "A", "%", "_", "é", "s", "i", "k", ".*", "\\"])
                .prop_map(str::to_owned)
        ];
        prop_oneof![
            3 => operand(kind).prop_map({ let p = p.clone(); move |v| Filter::Eq(p.clone(), v) }),
            2 => operand(kind).prop_map({ let p = p.clone(); move |v| Filter::Ne(p.clone(), v) }),
            1 => operand(kind).prop_map({ let p = p.clone(); move |v| Filter::Gt(p.clone(), v) }),
            1 => operand(kind).prop_map({ let p = p.clone(); move |v| Filter::Gte(p.clone(), v) }),
            1 => operand(kind).prop_map({ let p = p.clone(); move |v| Filter::Lt(p.clone(), v) }),
            1 => operand(kind).prop_map({ let p = p.clone(); move |v| Filter::Lte(p.clone(), v) }),
            1 => prop::collection::vec(operand(kind), 0..4)
                .prop_map({ let p = p.clone(); move |v| Filter::In(p.clone(), v) }),
            1 => prop::collection::vec(operand(kind), 0..4)
                .prop_map({ let p = p.clone(); move |v| Filter::Nin(p.clone(), v) }),
            1 => any::<bool>().prop_map({ let p = p.clone(); move |b| Filter::Exists(p.clone(), b) }),
            1 => needle.prop_map(move |s| Filter::ContainsCi(p.clone(), s)),
        ]
    })
}

fn filter() -> impl Strategy<Value = Filter> {
    let leaf = prop_oneof![
        1 => Just(Filter::All),
        1 => Just(Filter::Eq("nope".into(), json!(1))),
        12 => leaf_filter(),
    ];
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Filter::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Filter::Or),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

fn sort() -> impl Strategy<Value = Vec<SortKey>> {
    let key = (
        prop::sample::select(PATHS)
            .prop_filter("mostly scalar", |(_, k)| is_scalar(*k) || *k == Kind::Json)
            .prop_map(|(p, _)| p.to_owned()),
        prop_oneof![Just(SortDir::Asc), Just(SortDir::Desc)],
    )
        .prop_map(|(path, dir)| SortKey { path, dir });
    prop::collection::vec(key, 0..3)
}

fn query() -> impl Strategy<Value = Query> {
    (
        filter(),
        sort(),
        prop_oneof![3 => Just(0u64), 1 => 0..5u64],
        prop_oneof![2 => Just(0u64), 2 => 1..5u64],
    )
        .prop_map(|(filter, sort, skip, limit)| Query {
            filter,
            sort,
            skip,
            limit,
        })
}

fn update_op() -> impl Strategy<Value = UpdateOp> {
    path().prop_flat_map(|(p, kind)| {
        let p = p.to_owned();
        // Parents and lists may be null or scalars, and counters null or not
        // numbers: writes below them, pushes onto them and increments of them
        // follow the reference everywhere (`write_below_a_*`, `push_onto_*`,
        // `inc_of_null_or_a_non_number_*`); a null map entry is `Validation`
        // everywhere (`null_under_a_map_key_*`).
        let set_value = match p.as_str() {
            "meta" => {
                prop_oneof![6 => meta(), 1 => json_scalar(), 1 => Just(Value::Null)].boxed()
            }
            "nested.b" => {
                prop_oneof![6 => int().prop_map(Value::from), 1 => Just(Value::Null)].boxed()
            }
            "meta.cnt" => prop_oneof![
                6 => moderate_int().prop_map(Value::from),
                1 => Just(Value::Null)
            ]
            .boxed(),
            _ => prop_oneof![6 => value_of(kind), 1 => Just(Value::Null)].boxed(),
        };
        // No pushes onto `Json` paths: they would put arrays where filters look,
        // and MongoDB matches a filter on an array path against each element, a
        // documented difference (`filter_on_a_json_array_*`).
        let push_weight = if kind == Kind::Json { 0 } else { 2 };
        let inc_weight = match p.as_str() {
            "f" | "nested.b" | "meta.cnt" => 2,
            "meta" | "meta.x" | "meta.y.z" => 1,
            _ => 0,
        };
        // Small increments. The `Int` field `nested.b` holds the i64 extremes, so
        // some overflow (`Validation` everywhere); the `Json` counter `meta.cnt`
        // keeps moderate values.
        // Float increments go to the float field and the `Json` counter, where
        // one that rounds away on a large integer is no change
        // (`inc_absorbed_by_rounding_*`).
        let inc_by = if p == "f" || p == "meta.cnt" {
            prop_oneof![
                (-3..4i64).prop_map(Value::from),
                (-30..30i32).prop_map(|i| Value::from(f64::from(i) / 4.0)),
            ]
            .boxed()
        } else {
            (-3..4i64).prop_map(Value::from).boxed()
        };
        let push_value = match kind {
            Kind::IntSet => int().prop_map(Value::from).boxed(),
            Kind::Json => json_scalar().boxed(),
            _ => text().prop_map(Value::from).boxed(),
        };
        prop_oneof![
            4 => set_value.prop_map({ let p = p.clone(); move |v| UpdateOp::Set(p.clone(), v) }),
            1 => Just(UpdateOp::Unset(p.clone())),
            inc_weight => inc_by.prop_map({ let p = p.clone(); move |v| UpdateOp::Inc(p.clone(), v) }),
            push_weight => push_value.prop_map({ let p = p.clone(); move |v| UpdateOp::Push(p.clone(), v) }),
            1 => value_of(kind).prop_map(move |v| UpdateOp::SetOnInsert(p.clone(), v)),
        ]
    })
}

fn update() -> impl Strategy<Value = Update> {
    prop::collection::vec(update_op(), 1..4).prop_map(|ops| Update { ops })
}

/// Paths for count-by, min and max (some invalid, to compare validation).
fn agg_path() -> impl Strategy<Value = String> {
    prop::sample::select(PATHS).prop_map(|(p, _)| p.to_owned())
}

// ---------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------

#[derive(Clone)]
enum Op {
    Insert(Value),
    InsertMany(Vec<Value>),
    Get(String),
    UpdateOne(String, Update),
    UpdateMany(Filter, Update),
    Upsert(String, Update),
    Replace(Value),
    Delete(String),
    DeleteMany(Filter),
    Find(Query),
    FindPage(Query),
    Count(Filter),
    CountBy(Filter, String),
    Aggregate(Filter, String, Agg),
}

/// Compact JSON, so a minimized case reads like the calls it makes. Strings over
/// 40 bytes are abbreviated to their start and length.
fn js<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .map(|v| abbreviate(&v).to_string())
        .unwrap_or_default()
}

fn abbreviate(v: &Value) -> Value {
    match v {
        Value::String(s) if s.len() > 40 => {
            let head: String = s.chars().take(10).collect();
            Value::from(format!("{head}…({} bytes)", s.len()))
        }
        Value::Array(items) => Value::Array(items.iter().map(abbreviate).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), abbreviate(v))).collect())
        }
        other => other.clone(),
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Insert(d) => write!(f, "insert({})", js(d)),
            Op::InsertMany(ds) => write!(f, "insert_many({})", js(ds)),
            Op::Get(k) => write!(f, "get({k:?})"),
            Op::UpdateOne(k, u) => write!(f, "update_one({k:?}, {})", js(u)),
            Op::UpdateMany(fl, u) => write!(f, "update_many({}, {})", js(fl), js(u)),
            Op::Upsert(k, u) => write!(f, "upsert({k:?}, {})", js(u)),
            Op::Replace(d) => write!(f, "replace({})", js(d)),
            Op::Delete(k) => write!(f, "delete({k:?})"),
            Op::DeleteMany(fl) => write!(f, "delete_many({})", js(fl)),
            Op::Find(q) => write!(f, "find({})", js(q)),
            Op::FindPage(q) => write!(f, "find_page({})", js(q)),
            Op::Count(fl) => write!(f, "count({})", js(fl)),
            Op::CountBy(fl, p) => write!(f, "count_by({}, {p:?})", js(fl)),
            Op::Aggregate(fl, p, a) => write!(f, "aggregate({}, {p:?}, {a:?})", js(fl)),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any_document().prop_map(Op::Insert),
        1 => prop::collection::vec(any_document(), 0..4).prop_map(Op::InsertMany),
        1 => key().prop_map(Op::Get),
        3 => (key(), update()).prop_map(|(k, u)| Op::UpdateOne(k, u)),
        2 => (filter(), update()).prop_map(|(f, u)| Op::UpdateMany(f, u)),
        2 => (key(), update()).prop_map(|(k, u)| Op::Upsert(k, u)),
        1 => any_document().prop_map(Op::Replace),
        1 => key().prop_map(Op::Delete),
        1 => filter().prop_map(Op::DeleteMany),
        3 => query().prop_map(Op::Find),
        1 => query().prop_map(Op::FindPage),
        1 => filter().prop_map(Op::Count),
        1 => (filter(), agg_path()).prop_map(|(f, p)| Op::CountBy(f, p)),
        2 => (
            filter(),
            agg_path(),
            prop_oneof![Just(Agg::Min), Just(Agg::Max), Just(Agg::Sum)]
        )
            // `n` holds the i64 extremes; their overflowing sum is a pinned
            // divergence (`sum_past_i64_max_*`).
            .prop_filter("no sum of n", |(_, p, a)| !(p == "n" && *a == Agg::Sum))
            .prop_map(|(f, p, a)| Op::Aggregate(f, p, a)),
    ]
}

/// A case: seed documents (distinct keys, one `insert_many`) then operations.
#[derive(Clone)]
struct Case {
    seed: Vec<Value>,
    ops: Vec<Op>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed: insert_many({})", js(&self.seed))?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  #{i} {op:?}")?;
        }
        Ok(())
    }
}

fn case() -> impl Strategy<Value = Case> {
    let seed = prop::collection::btree_set(key(), 0..7).prop_flat_map(|keys| {
        keys.into_iter()
            .map(|k| document(k).boxed())
            .collect::<Vec<_>>()
    });
    (seed, prop::collection::vec(op(), 1..16)).prop_map(|(seed, ops)| Case { seed, ops })
}

// ---------------------------------------------------------------------------------
// Running and comparing
// ---------------------------------------------------------------------------------

/// What an operation returned, as JSON, or the kind of its error.
#[derive(Debug)]
enum Outcome {
    Ok(Value),
    Err(&'static str, String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(v) => write!(f, "Ok({})", js(v)),
            Outcome::Err(kind, msg) => write!(f, "Err({kind}: {msg})"),
        }
    }
}

fn outcome<T>(r: Result<T>, to_json: impl FnOnce(T) -> Value) -> Outcome {
    match r {
        Ok(v) => Outcome::Ok(to_json(v)),
        Err(e) => Outcome::Err(error_kind(&e), e.to_string()),
    }
}

async fn apply(c: &dyn Collection, op: &Op) -> Outcome {
    match op {
        Op::Insert(d) => outcome(c.insert(d.clone()).await, |()| Value::Null),
        Op::InsertMany(ds) => outcome(c.insert_many(ds.clone()).await, Value::from),
        Op::Get(k) => outcome(c.get(k).await, |d| d.unwrap_or(Value::Null)),
        Op::UpdateOne(k, u) => outcome(c.update_one(k, u).await, |d| d),
        Op::UpdateMany(fl, u) => outcome(
            c.update_many(fl, u).await,
            |n| json!({ "matched": n.matched, "modified": n.modified }),
        ),
        Op::Upsert(k, u) => outcome(
            c.upsert(k, u).await,
            |up| json!({ "inserted": up.inserted, "document": up.document }),
        ),
        Op::Replace(d) => outcome(c.replace(d.clone()).await, |()| Value::Null),
        Op::Delete(k) => outcome(c.delete(k).await, Value::from),
        Op::DeleteMany(fl) => outcome(c.delete_many(fl).await, Value::from),
        Op::Find(q) => outcome(c.find(q).await, Value::Array),
        Op::FindPage(q) => outcome(
            c.find_page(q).await,
            |p| json!({ "items": p.items, "total": p.total }),
        ),
        Op::Count(fl) => outcome(c.count(fl).await, Value::from),
        Op::CountBy(fl, p) => outcome(c.count_by(fl, p).await, |groups| {
            Value::Array(groups.into_iter().map(|(v, n)| json!([v, n])).collect())
        }),
        Op::Aggregate(fl, p, a) => outcome(c.aggregate(fl, p, *a).await, |v| v),
    }
}

/// Whether two outcomes agree: same error kind, or equal values (float sums
/// within a relative 1e-9).
fn agree(op: &Op, reference: &Outcome, other: &Outcome) -> bool {
    match (reference, other) {
        (Outcome::Err(a, _), Outcome::Err(b, _)) => a == b,
        (Outcome::Ok(a), Outcome::Ok(b)) => {
            same_value(a, b)
                || matches!(op, Op::Aggregate(_, _, Agg::Sum))
                    && match (a.as_f64(), b.as_f64()) {
                        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                        _ => false,
                    }
        }
        _ => false,
    }
}

static OPS_RUN: AtomicU64 = AtomicU64::new(0);
/// Operations whose reference outcome was a success (the rest compare errors).
static OPS_OK: AtomicU64 = AtomicU64::new(0);

async fn run_case(backend: Backend, url: &str, case: &Case) -> Result<(), TestCaseError> {
    let reference = IsolatedStore::memory(&[*DOCS]).await;
    let other = IsolatedStore::open(backend, url, &[*DOCS]).await;
    let result = compare(backend, &reference, &other, case).await;
    reference.discard().await;
    other.discard().await;
    result
}

async fn compare(
    backend: Backend,
    reference: &IsolatedStore,
    other: &IsolatedStore,
    case: &Case,
) -> Result<(), TestCaseError> {
    let mem = reference
        .store
        .collection(*DOCS)
        .expect("memory collection");
    let real = other.store.collection(*DOCS).expect("backend collection");
    let seed = Op::InsertMany(case.seed.clone());
    let all = Op::Find(Query::new());
    let steps = std::iter::once(&seed).chain(&case.ops).chain([&all]);
    for (i, op) in steps.enumerate() {
        let a = apply(mem.as_ref(), op).await;
        let b = apply(real.as_ref(), op).await;
        OPS_RUN.fetch_add(1, Ordering::Relaxed);
        if matches!(a, Outcome::Ok(_)) {
            OPS_OK.fetch_add(1, Ordering::Relaxed);
        }
        if !agree(op, &a, &b) {
            let step = match i {
                0 => "seed".to_owned(),
                i if i > case.ops.len() => "final state".to_owned(),
                i => format!("#{}", i - 1),
            };
            return Err(TestCaseError::fail(format!(
                "{step} {op:?}\n  memory:   {a}\n  {:<9} {b}",
                format!("{}:", backend.name())
            )));
        }
    }
    Ok(())
}

/// Removes operations, seed documents and optional seed fields one at a time
/// while the case still diverges (proptest's shrinking stops at its iteration
/// budget; this finishes the job on the few steps that matter).
async fn minimize(backend: Backend, url: &str, reason: String, case: Case) -> (String, Case) {
    let mut best = (reason, case);
    loop {
        let mut candidates = Vec::new();
        let case = &best.1;
        for i in 0..case.ops.len() {
            let mut c = case.clone();
            c.ops.remove(i);
            candidates.push(c);
        }
        for i in 0..case.seed.len() {
            let mut c = case.clone();
            c.seed.remove(i);
            candidates.push(c);
            let fields: Vec<String> = case.seed[i]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for field in fields {
                if matches!(field.as_str(), "id" | "name" | "n" | "nested") {
                    continue;
                }
                let mut c = case.clone();
                if let Some(m) = c.seed[i].as_object_mut() {
                    m.remove(&field);
                }
                candidates.push(c);
            }
        }
        let mut improved = false;
        for c in candidates {
            if let Err(e) = run_case(backend, url, &c).await {
                best = (e.to_string(), c);
                improved = true;
                break;
            }
        }
        if !improved {
            return best;
        }
    }
}

fn differential(backend: Backend) {
    let Some(url) = backend.url() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cases = opstore_e2e::cases(DEFAULT_CASES);
    let config = Config {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let before = OPS_RUN.load(Ordering::Relaxed);
    let ok_before = OPS_OK.load(Ordering::Relaxed);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |c| runtime.block_on(run_case(backend, &url, &c)));
    let ops = OPS_RUN.load(Ordering::Relaxed) - before;
    let ok = OPS_OK.load(Ordering::Relaxed) - ok_before;
    match result {
        Ok(()) => println!(
            "differential memory vs {}: {cases} cases, {ops} operations compared \
             ({ok} succeeded, {} failed alike), 0 divergences",
            backend.name(),
            ops - ok
        ),
        Err(TestError::Fail(reason, case)) => {
            let (reason, case) =
                runtime.block_on(minimize(backend, &url, reason.to_string(), case));
            panic!(
                "memory and {} diverge: {reason}\nminimized case:\n{case:?}",
                backend.name()
            )
        }
        Err(TestError::Abort(reason)) => panic!("differential run aborted: {reason}"),
    }
}

#[test]
fn memory_and_postgres_agree_on_random_operation_sequences() {
    differential(Backend::Postgres);
}

#[test]
fn memory_and_mongo_agree_on_random_operation_sequences() {
    differential(Backend::Mongo);
}

#[test]
fn memory_and_sqlite_agree_on_random_operation_sequences() {
    differential(Backend::Sqlite);
}
