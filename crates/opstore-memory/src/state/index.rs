//! Secondary indexes of one collection: indexed value -> keys of the documents
//! holding it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use opstore_domain::Value;
use opstore_domain::eval::index_key;

/// A non-string value of an indexed field, in a form that is equal exactly when
/// [`index_key`] texts are equal, built without formatting JSON. Strings are
/// indexed separately, by their own text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum IndexKey {
    /// Integers, and floats with an integral value that `index_key` prints as one.
    Int(i64),
    Bool(bool),
    /// Anything else, as `index_key` text.
    Text(Box<str>),
}

impl IndexKey {
    pub(super) fn of(v: &Value) -> IndexKey {
        match v {
            Value::Bool(b) => IndexKey::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => IndexKey::Int(i),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => IndexKey::Int(f as i64),
                _ => IndexKey::Text(index_key(v).into()),
            },
            other => IndexKey::Text(index_key(other).into()),
        }
    }
}

/// Whether two values share an index entry (`index_key(a) == index_key(b)`).
pub(super) fn same_index_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::String(_), _) | (_, Value::String(_)) => false,
        _ => IndexKey::of(a) == IndexKey::of(b),
    }
}

/// Keys of the documents holding one value of an indexed field. A hash set keeps
/// inserts cheap in large entries; readers that need a fixed order sort.
pub(super) type Keys = HashSet<Arc<str>>;

/// A secondary index: value of `path` -> keys holding it.
#[derive(Debug, Clone)]
pub(super) struct Index {
    pub(super) path: &'static str,
    /// String values, looked up by `&str` without allocating.
    strs: HashMap<Box<str>, Keys>,
    /// Every other value.
    others: HashMap<IndexKey, Keys>,
}

impl Index {
    pub(super) fn new(path: &'static str) -> Self {
        Index {
            path,
            strs: HashMap::new(),
            others: HashMap::new(),
        }
    }

    pub(super) fn keys(&self, v: &Value) -> Option<&Keys> {
        match v {
            Value::String(s) => self.strs.get(s.as_str()),
            other => self.others.get(&IndexKey::of(other)),
        }
    }

    pub(super) fn add(&mut self, v: &Value, key: &Arc<str>) {
        match v {
            Value::String(s) => {
                if let Some(keys) = self.strs.get_mut(s.as_str()) {
                    keys.insert(Arc::clone(key));
                } else {
                    self.strs
                        .insert(s.as_str().into(), Keys::from([Arc::clone(key)]));
                }
            }
            other => {
                self.others
                    .entry(IndexKey::of(other))
                    .or_default()
                    .insert(Arc::clone(key));
            }
        }
    }

    pub(super) fn remove(&mut self, v: &Value, key: &str) {
        match v {
            Value::String(s) => {
                if let Some(keys) = self.strs.get_mut(s.as_str()) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.strs.remove(s.as_str());
                    }
                }
            }
            other => {
                let ik = IndexKey::of(other);
                if let Some(keys) = self.others.get_mut(&ik) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.others.remove(&ik);
                    }
                }
            }
        }
    }
}
