//! Secondary indexes of one collection: indexed value -> keys of the documents
//! holding it.

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

/// Hash maps and sets of the memory store. Document keys come from users, so the
/// hasher is seeded per map; it is several times cheaper than SipHash on short keys.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`HashMap`].
pub(crate) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Keys of the documents holding one value of an indexed field. Most values of
/// a selective index are held by one document, which needs no set of its own; a
/// hash set keeps inserts cheap in large entries, and readers that need a fixed
/// order sort.
#[derive(Debug, Clone)]
pub(super) enum Keys {
    One(Arc<str>),
    Many(HashSet<Arc<str>>),
}

impl Keys {
    fn insert(&mut self, key: &Arc<str>) {
        match self {
            Keys::One(k) if k == key => {}
            Keys::One(k) => {
                let mut set = HashSet::with_capacity_and_hasher(2, Default::default());
                set.insert(Arc::clone(k));
                set.insert(Arc::clone(key));
                *self = Keys::Many(set);
            }
            Keys::Many(set) => {
                set.insert(Arc::clone(key));
            }
        }
    }

    /// Removes `key`; returns whether no key is left.
    fn remove(&mut self, key: &str) -> bool {
        match self {
            Keys::One(k) => &**k == key,
            Keys::Many(set) => {
                set.remove(key);
                set.is_empty()
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Keys::Many(set) if set.is_empty())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        let (one, many) = match self {
            Keys::One(k) => (Some(k), None),
            Keys::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

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
            strs: HashMap::default(),
            others: HashMap::default(),
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
            Value::String(s) => match self.strs.get_mut(s.as_str()) {
                Some(keys) => keys.insert(key),
                None => {
                    self.strs
                        .insert(s.as_str().into(), Keys::One(Arc::clone(key)));
                }
            },
            other => match self.others.entry(IndexKey::of(other)) {
                std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().insert(key),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Keys::One(Arc::clone(key)));
                }
            },
        }
    }

    pub(super) fn remove(&mut self, v: &Value, key: &str) {
        match v {
            Value::String(s) => {
                if self
                    .strs
                    .get_mut(s.as_str())
                    .is_some_and(|keys| keys.remove(key))
                {
                    self.strs.remove(s.as_str());
                }
            }
            other => {
                let ik = IndexKey::of(other);
                if self
                    .others
                    .get_mut(&ik)
                    .is_some_and(|keys| keys.remove(key))
                {
                    self.others.remove(&ik);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(ix: &Index, v: &Value) -> Vec<String> {
        let mut keys: Vec<String> = ix
            .keys(v)
            .map(|k| k.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    #[test]
    fn entries_grow_from_one_key_and_vanish_with_the_last() {
        let mut ix = Index::new("name");
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        for v in [Value::from("x"), Value::from(7)] {
            ix.add(&v, &a);
            ix.add(&v, &a);
            assert_eq!(held(&ix, &v), ["a"]);
            ix.add(&v, &b);
            assert_eq!(held(&ix, &v), ["a", "b"]);
            ix.remove(&v, "missing");
            ix.remove(&v, "a");
            assert_eq!(held(&ix, &v), ["b"]);
            ix.remove(&v, "b");
            assert!(ix.keys(&v).is_none());
            ix.add(&v, &b);
            ix.remove(&v, "a");
            assert_eq!(held(&ix, &v), ["b"]);
        }
    }
}
