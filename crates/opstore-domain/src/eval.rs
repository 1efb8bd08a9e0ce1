//! The reference semantics of the query model, evaluated on JSON documents.
//!
//! The memory adapter runs on these functions, and other adapters use them where
//! they compute in process (building an upserted document, client-side scans).
//! When a database's native behaviour differs, the adapter adapts, not these rules.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use crate::query::{Agg, Filter, SortDir, SortKey, Update, UpdateOp};

mod removal;

pub use removal::removes_a_matched_field;

/// The value at a dotted path; `None` when absent or null.
pub fn get_path<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    // A byte scan rather than `split('.')`: paths are short and this runs for
    // every field of every document a query or write touches.
    let mut cur = doc;
    let mut rest = path;
    loop {
        let map = cur.as_object()?;
        match rest.bytes().position(|b| b == b'.') {
            Some(i) => {
                cur = member(map, &rest[..i])?;
                rest = &rest[i + 1..];
            }
            None => {
                cur = member(map, rest)?;
                break;
            }
        }
    }
    if cur.is_null() { None } else { Some(cur) }
}

/// `map.get(key)`. A small map is scanned comparing lengths first, which skips
/// most whole-key comparisons the tree search would make.
fn member<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() > 16 {
        return map.get(key);
    }
    map.iter()
        .find(|(k, _)| k.len() == key.len() && k.as_bytes() == key.as_bytes())
        .map(|(_, v)| v)
}

/// Sets the value at a dotted path, creating (or replacing non-object) parents.
pub fn set_path(doc: &mut Value, path: &str, value: Value) {
    let mut cur = doc;
    let mut segs = path.split('.').peekable();
    while let Some(seg) = segs.next() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        if segs.peek().is_none() {
            map.insert(seg.to_owned(), value);
            return;
        }
        cur = map
            .entry(seg.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Removes the value at a dotted path. Returns whether something was removed.
pub fn remove_path(doc: &mut Value, path: &str) -> bool {
    let (parent, last) = match path.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, path),
    };
    let mut cur = doc;
    if let Some(parent) = parent {
        for seg in parent.split('.') {
            match cur.as_object_mut().and_then(|m| m.get_mut(seg)) {
                Some(next) => cur = next,
                None => return false,
            }
        }
    }
    cur.as_object_mut().and_then(|m| m.remove(last)).is_some()
}

/// Portable equality: numbers by value, objects and arrays structurally.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Numbers compare by their exact value, as PostgreSQL's `numeric` and MongoDB
/// do: an integer and a float are not rounded to a common type first, so
/// `2^53 + 1` is greater than the float `2^53`.
fn compare_numbers(x: &Number, y: &Number) -> Ordering {
    match (exact_int(x), exact_int(y)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(a), None) => compare_int_float(a, y.as_f64().unwrap_or(f64::NAN)),
        (None, Some(b)) => compare_int_float(b, x.as_f64().unwrap_or(f64::NAN)).reverse(),
        (None, None) => {
            let a = x.as_f64().unwrap_or(f64::NAN);
            let b = y.as_f64().unwrap_or(f64::NAN);
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
    }
}

/// An integer JSON number (signed or unsigned 64-bit); `None` for floats.
fn exact_int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// `i` against `f`, exactly. NaN compares equal, as before.
fn compare_int_float(i: i128, f: f64) -> Ordering {
    // 2^127, exactly; every integer here is far inside it.
    const LIMIT: f64 = (1_u128 << 127) as f64;
    if f.is_nan() {
        return Ordering::Equal;
    }
    if f >= LIMIT {
        return Ordering::Less;
    }
    if f < -LIMIT {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // Exact: `whole` is integral and inside the i128 range.
    match i.cmp(&(whole as i128)) {
        Ordering::Equal => 0.0_f64.partial_cmp(&(f - whole)).unwrap_or(Ordering::Equal),
        other => other,
    }
}

/// Ordering of two present values of the same kind; `None` across kinds.
pub fn compare_values(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Some(compare_numbers(x, y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Rank of a kind when sorting mixed kinds: null < numbers < strings < objects < arrays < bools.
fn kind_rank(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Null) => 0,
        Some(Value::Number(_)) => 1,
        Some(Value::String(_)) => 2,
        Some(Value::Object(_)) => 3,
        Some(Value::Array(_)) => 4,
        Some(Value::Bool(_)) => 5,
    }
}

/// Sort order of two optional values (absent/null first).
pub fn sort_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => {
            compare_values(x, y).unwrap_or_else(|| kind_rank(a).cmp(&kind_rank(b)))
        }
        _ => kind_rank(a).cmp(&kind_rank(b)),
    }
}

/// Whether `doc` matches `filter`.
pub fn matches(filter: &Filter, doc: &Value) -> bool {
    match filter {
        Filter::All => true,
        Filter::Eq(p, v) => eq_at(doc, p, v),
        Filter::Ne(p, v) => !eq_at(doc, p, v),
        Filter::Gt(p, v) => cmp_at(doc, p, v).is_some_and(Ordering::is_gt),
        Filter::Gte(p, v) => cmp_at(doc, p, v).is_some_and(Ordering::is_ge),
        Filter::Lt(p, v) => cmp_at(doc, p, v).is_some_and(Ordering::is_lt),
        Filter::Lte(p, v) => cmp_at(doc, p, v).is_some_and(Ordering::is_le),
        Filter::In(p, vs) => vs.iter().any(|v| eq_at(doc, p, v)),
        Filter::Nin(p, vs) => !vs.iter().any(|v| eq_at(doc, p, v)),
        Filter::Exists(p, want) => get_path(doc, p).is_some() == *want,
        Filter::ContainsCi(p, needle) => get_path(doc, p)
            .and_then(Value::as_str)
            .is_some_and(|hay| hay.to_lowercase().contains(&needle.to_lowercase())),
        Filter::And(fs) => fs.iter().all(|f| matches(f, doc)),
        Filter::Or(fs) => fs.iter().any(|f| matches(f, doc)),
        Filter::Not(f) => !matches(f, doc),
    }
}

fn eq_at(doc: &Value, path: &str, v: &Value) -> bool {
    match get_path(doc, path) {
        None => v.is_null(),
        Some(x) => values_equal(x, v),
    }
}

fn cmp_at(doc: &Value, path: &str, v: &Value) -> Option<Ordering> {
    compare_values(get_path(doc, path)?, v)
}

/// Compares two documents by sort keys, then by `key_path` ascending.
pub fn compare_docs(a: &Value, b: &Value, sort: &[SortKey], key_path: &str) -> Ordering {
    for key in sort {
        let ord = sort_cmp(get_path(a, &key.path), get_path(b, &key.path));
        let ord = if key.dir == SortDir::Desc {
            ord.reverse()
        } else {
            ord
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    sort_cmp(get_path(a, key_path), get_path(b, key_path))
}

/// Applies a (checked) update. `inserting` enables `set_on_insert`. Returns
/// whether the document changed.
pub fn apply_update(doc: &mut Value, update: &Update, inserting: bool) -> bool {
    let before = doc.clone();
    for op in &update.ops {
        match op {
            UpdateOp::Set(p, v) => set_path(doc, p, v.clone()),
            UpdateOp::SetOnInsert(p, v) if inserting => set_path(doc, p, v.clone()),
            UpdateOp::SetOnInsert(..) => {}
            UpdateOp::Unset(p) => {
                remove_path(doc, p);
            }
            UpdateOp::Inc(p, by) => {
                let next = add_numbers(get_path(doc, p), by);
                set_path(doc, p, next);
            }
            UpdateOp::Push(p, v) => {
                let mut items = match get_path(doc, p) {
                    Some(Value::Array(items)) => items.clone(),
                    _ => Vec::new(),
                };
                items.push(v.clone());
                set_path(doc, p, Value::Array(items));
            }
        }
    }
    !values_equal(&before, doc)
}

/// `current + by`, integer when both are integers and the sum fits.
pub fn add_numbers(current: Option<&Value>, by: &Value) -> Value {
    let zero = Value::from(0);
    let cur = current.filter(|v| v.is_number()).unwrap_or(&zero);
    if let (Some(a), Some(b)) = (cur.as_i64(), by.as_i64()) {
        if let Some(sum) = a.checked_add(b) {
            return Value::from(sum);
        }
    }
    let sum = cur.as_f64().unwrap_or(0.0) + by.as_f64().unwrap_or(0.0);
    Number::from_f64(sum).map_or(Value::Null, Value::Number)
}

/// Removes duplicate elements of set-typed fields after an update, keeping the first.
pub fn dedup_array(items: &mut Vec<Value>) {
    let mut seen: Vec<Value> = Vec::with_capacity(items.len());
    items.retain(|v| {
        if seen.iter().any(|s| values_equal(s, v)) {
            false
        } else {
            seen.push(v.clone());
            true
        }
    });
}

/// Folds one value into a running min / max / sum.
pub fn fold_aggregate(agg: Agg, acc: Value, v: Option<&Value>) -> Value {
    let Some(v) = v else { return acc };
    match agg {
        Agg::Sum => {
            if !v.is_number() {
                return acc;
            }
            add_numbers(Some(&acc), v)
        }
        Agg::Min | Agg::Max => {
            if acc.is_null() {
                return v.clone();
            }
            let ord = sort_cmp(Some(v), Some(&acc));
            let better = if agg == Agg::Min {
                ord.is_lt()
            } else {
                ord.is_gt()
            };
            if better { v.clone() } else { acc }
        }
    }
}

/// The starting value of an aggregate.
pub fn aggregate_start(agg: Agg) -> Value {
    match agg {
        Agg::Sum => Value::from(0),
        Agg::Min | Agg::Max => Value::Null,
    }
}

/// A canonical text form of a scalar for index keys: equal values give equal text.
pub fn index_key(v: &Value) -> String {
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_and_null_are_the_same() {
        let doc = json!({"a": null});
        assert!(matches(&Filter::eq("a", Value::Null), &doc));
        assert!(matches(&Filter::eq("b", Value::Null), &doc));
        assert!(matches(&Filter::ne("a", 1), &doc));
        assert!(!matches(&Filter::gt("a", 0), &doc));
        assert!(matches(&Filter::missing("a"), &doc));
    }

    #[test]
    fn numbers_compare_by_value() {
        let doc = json!({"n": 1});
        assert!(matches(&Filter::eq("n", 1.0), &doc));
        assert!(matches(&Filter::lt("n", 1.5), &doc));
    }

    #[test]
    fn integers_and_floats_compare_exactly() {
        let big = 1_i64 << 53;
        let doc = json!({"n": big + 1, "m": i64::MAX, "f": -0.5});
        assert!(!matches(&Filter::eq("n", big as f64), &doc));
        assert!(matches(&Filter::gt("n", big as f64), &doc));
        assert!(matches(&Filter::lt("m", 2_f64.powi(63)), &doc));
        assert!(matches(&Filter::lt("f", 0), &doc));
        assert!(matches(&Filter::gt("f", -1), &doc));
        assert!(matches(&Filter::eq("n", big + 1), &doc));
        assert!(values_equal(&json!(big), &json!(big as f64)));
    }

    #[test]
    fn contains_is_literal_and_case_insensitive() {
        let doc = json!({"m": "Disk 100% FULL_now"});
        assert!(matches(&Filter::contains_ci("m", "100% full"), &doc));
        assert!(!matches(&Filter::contains_ci("m", ".*"), &doc));
        assert!(matches(&Filter::contains_ci("m", "l_n"), &doc));
    }

    #[test]
    fn update_reports_modification() {
        let mut doc = json!({"a": 1});
        assert!(!apply_update(&mut doc, &Update::new().set("a", 1.0), false));
        assert!(apply_update(
            &mut doc,
            &Update::new().inc("a", 2).push("l", "x"),
            false
        ));
        assert!(values_equal(&doc, &json!({"a": 3, "l": ["x"]})), "{doc}");
    }
}
