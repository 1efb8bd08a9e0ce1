//! The declared fields as a tree of path segments, so that checking a document
//! walks it once.

use serde_json::{Map, Value};

use super::{Field, FieldType};

/// Declared fields below one object, for [`Schema::check_document`].
#[derive(Clone, Default)]
pub(super) struct FieldTree {
    /// Sorted by segment, the order a document's keys usually come in.
    children: Vec<FieldNode>,
    /// How many children are required.
    required: usize,
}

#[derive(Clone)]
struct FieldNode {
    seg: Box<str>,
    ty: FieldType,
    optional: bool,
    /// Declared fields below this one (its type is then `Object`).
    below: FieldTree,
}

impl std::fmt::Debug for FieldTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldTree { .. }")
    }
}

impl FieldTree {
    /// The tree of `fields`, or `None` when a dotted field's parent is not declared
    /// (then documents are checked field by field).
    pub(super) fn build(fields: &[Field]) -> Option<FieldTree> {
        let mut by_depth: Vec<&Field> = fields.iter().collect();
        by_depth.sort_by_key(|f| f.path.matches('.').count());
        let mut root = FieldTree::default();
        for field in by_depth {
            let mut segs: Vec<&str> = field.path.split('.').collect();
            let last = segs.pop()?;
            let mut tree = &mut root;
            for seg in segs {
                let i = tree.find(seg).ok()?;
                tree = &mut tree.children[i].below;
            }
            let Err(i) = tree.find(last) else {
                return None;
            };
            tree.children.insert(
                i,
                FieldNode {
                    seg: last.into(),
                    ty: field.ty,
                    optional: field.optional,
                    below: FieldTree::default(),
                },
            );
            if !field.optional {
                tree.required += 1;
            }
        }
        Some(root)
    }

    fn find(&self, seg: &str) -> std::result::Result<usize, usize> {
        self.children.binary_search_by(|n| (*n.seg).cmp(seg))
    }

    /// Whether `obj` satisfies every declared field below it: each present
    /// (non-null) declared value has its type, each absent one is optional (an
    /// absent optional parent excuses its children). One pass over the object;
    /// exactly what the field-by-field check accepts, whatever the key order.
    pub(super) fn accepts(&self, obj: &Map<String, Value>) -> bool {
        let mut required = 0;
        // Keys usually arrive sorted, like the children: try the child after the
        // last match (or the one after it) before searching.
        let mut next = 0;
        for (k, v) in obj {
            let hint = self.children[next.min(self.children.len())..]
                .iter()
                .take(2)
                .position(|n| *n.seg == **k);
            let i = match hint {
                Some(p) => next + p,
                None => match self.find(k) {
                    Ok(i) => i,
                    Err(_) => continue,
                },
            };
            next = i + 1;
            if v.is_null() {
                continue;
            }
            let node = &self.children[i];
            if !node.ty.accepts(v) {
                return false;
            }
            if !node.optional {
                required += 1;
            }
            if !node.below.children.is_empty() {
                match v.as_object() {
                    Some(inner) if node.below.accepts(inner) => {}
                    _ => return false,
                }
            }
        }
        required == self.required
    }
}
