//! Updates an adapter applies in process because a native update may not follow
//! the reference.
//!
//! A database's own update operators agree with the reference ([`crate::eval`])
//! only while every parent of a written path is an object and every counter and
//! list holds the type its field declares. [`Checked::<Update>::needs_document_check`]
//! says, from the schema alone, when that may not hold for some stored document;
//! for such an update an adapter reads the document, applies
//! [`Schema::apply_update_to`] (the reference update, followed by the schema
//! check the reference makes) and writes the result back.

use serde_json::Value;

use crate::check::Checked;
use crate::error::{Result, StoreError};
use crate::eval;
use crate::query::{Update, UpdateOp};
use crate::schema::{FieldType, Schema};

impl Checked<Update> {
    /// Whether applying this update with a database's native operators may give
    /// a different result from the reference on some document the schema allows.
    ///
    /// True when an operator:
    /// - writes below a parent that may be absent, null or not an object: an
    ///   optional declared parent (an `Object`, or a `Map`), or any path inside a
    ///   `Json` field. The reference replaces a null or scalar parent with an
    ///   object, and checks that an object it creates holds its required fields;
    /// - is a `push` onto a field that may be null or not an array: an optional
    ///   `List`/`Set` field, or a `Json` value. The reference starts a new list;
    /// - is an `inc` of a field that may be null or not a number: an optional
    ///   `Int`/`Float` field, or a `Json` value (the reference counts from 0 and
    ///   overwrites), or a `Float` map entry, which may be stored as an integer
    ///   (an increment absorbed by float rounding leaves it unchanged in the
    ///   reference, but would change its stored type).
    ///
    /// Not covered, because no schema tells it apart: an `inc` that overflows a
    /// 64-bit integer (the reference refuses it with `Validation`), and a unique
    /// value that collides. Adapters handle those from the database's answer.
    pub fn needs_document_check(&self, schema: &Schema) -> bool {
        self.ops
            .iter()
            .any(|op| op_needs_document_check(schema, op))
    }
}

fn op_needs_document_check(schema: &Schema, op: &UpdateOp) -> bool {
    let path = op.path();
    let parent_unsure = path.match_indices('.').any(|(i, _)| {
        schema
            .field(&path[..i])
            .is_some_and(|f| f.is_optional() || f.ty() == FieldType::Json)
    });
    if parent_unsure {
        return true;
    }
    let declared = schema.field(path);
    let optional = declared.is_some_and(|f| f.is_optional());
    // Paths resolve (the update was checked); a failure here cannot happen, and
    // the careful answer is the in-process update.
    let Ok(ty) = schema.resolve(path) else {
        return true;
    };
    match op {
        UpdateOp::Push(..) => {
            ty == FieldType::Json
                || (optional && matches!(ty, FieldType::List(_) | FieldType::Set(_)))
        }
        UpdateOp::Inc(..) => {
            let map_float = declared.is_none() && ty == FieldType::Float;
            ty == FieldType::Json
                || map_float
                || (optional && matches!(ty, FieldType::Int | FieldType::Float))
        }
        UpdateOp::Set(..) | UpdateOp::SetOnInsert(..) | UpdateOp::Unset(..) => false,
    }
}

impl Schema {
    /// Applies a checked update to one stored document the way the reference
    /// adapter does, and returns whether the document changed.
    ///
    /// The reference update ([`eval::apply_update`]), then duplicates pushed into
    /// declared `Set` fields are dropped, then the result is checked against the
    /// schema. `doc` is left unchanged when that check fails (`Validation`,
    /// naming the operation, collection and key). `inserting` enables
    /// `set_on_insert`. The change is judged after the duplicates are dropped, so
    /// pushing a value a set already holds is no change.
    pub fn apply_update_to(
        &self,
        doc: &mut Value,
        update: &Checked<Update>,
        inserting: bool,
    ) -> Result<bool> {
        let (next, changed) = self.updated(doc, update, inserting)?;
        *doc = next;
        Ok(changed)
    }

    /// Like [`apply_update_to`](Self::apply_update_to), for a caller that keeps
    /// the stored document: returns the updated copy and whether it differs.
    pub fn updated(
        &self,
        doc: &Value,
        update: &Checked<Update>,
        inserting: bool,
    ) -> Result<(Value, bool)> {
        let mut next = doc.clone();
        eval::apply_update(&mut next, update, inserting);
        for op in &update.ops {
            let UpdateOp::Push(path, _) = op else {
                continue;
            };
            if !matches!(self.field(path).map(|f| f.ty()), Some(FieldType::Set(_))) {
                continue;
            }
            if let Some(Value::Array(items)) = value_mut(&mut next, path) {
                eval::dedup_array(items);
            }
        }
        if let Err(e) = self.check_document(&next) {
            let key = eval::get_path(doc, self.key())
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(StoreError::Validation(format!(
                "update of `{key}` in `{}` would store a document the schema refuses: {e}",
                self.name()
            )));
        }
        let changed = !eval::values_equal(doc, &next);
        Ok((next, changed))
    }
}

fn value_mut<'a>(doc: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut cur = doc;
    for seg in path.split('.') {
        cur = cur.as_object_mut()?.get_mut(seg)?;
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Field, ScalarType};
    use serde_json::json;

    /// A document of [`schema`] with every required field, plus `extra`.
    fn base(extra: Value) -> Value {
        let mut d = json!({
            "id": "k", "n": 1, "name": "x", "nested": {"a": "a"}, "list": [],
            "nums": [], "counts": {}, "weights": {}
        });
        if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
            d.extend(extra.clone());
        }
        d
    }

    fn schema() -> Schema {
        Schema::builder("docs", "id")
            .field(Field::new("n", FieldType::Int))
            .field(Field::new("f", FieldType::Float).optional())
            .field(Field::new("name", FieldType::String))
            .field(Field::new("nested", FieldType::Object))
            .field(Field::new("nested.a", FieldType::String))
            .field(Field::new("nested.b", FieldType::Int).optional())
            .field(Field::new("opt", FieldType::Object).optional())
            .field(Field::new("opt.a", FieldType::Int))
            .field(Field::new("opt.b", FieldType::Int).optional())
            .field(Field::new("tags", FieldType::List(ScalarType::String)).optional())
            .field(Field::new("list", FieldType::List(ScalarType::String)))
            .field(Field::new("nums", FieldType::Set(ScalarType::Int)))
            .field(Field::new("meta", FieldType::Json).optional())
            .field(Field::new("labels", FieldType::Map(ScalarType::String)).optional())
            .field(Field::new("counts", FieldType::Map(ScalarType::Int)))
            .field(Field::new("weights", FieldType::Map(ScalarType::Float)))
            .build()
    }

    fn flagged(u: Update) -> bool {
        let s = schema();
        s.check_update(&u)
            .expect("valid update")
            .needs_document_check(&s)
    }

    #[test]
    fn writes_below_unsure_parents_are_flagged() {
        assert!(flagged(Update::new().set("opt.b", 1)));
        assert!(flagged(Update::new().set("meta.x", 1)));
        assert!(flagged(Update::new().set("meta.x.y", "v")));
        assert!(flagged(Update::new().unset("meta.x")));
        assert!(flagged(Update::new().set("labels.team", "t")));
        assert!(flagged(Update::new().set("name", "x").inc("meta.y.z", 2)));
    }

    #[test]
    fn writes_below_required_objects_and_maps_are_native() {
        assert!(!flagged(Update::new().set("nested.a", "x")));
        assert!(!flagged(Update::new().set("nested.b", 1)));
        assert!(!flagged(
            Update::new().set("counts.x", 1).inc("counts.y", 2)
        ));
        assert!(!flagged(Update::new().set("meta", json!({"x": 1}))));
        assert!(!flagged(Update::new().unset("meta").unset("opt")));
        assert!(!flagged(Update::new().set("opt", json!({"a": 1}))));
    }

    #[test]
    fn pushes_onto_lists_that_may_be_null_or_not_arrays_are_flagged() {
        assert!(flagged(Update::new().push("tags", "v")));
        assert!(flagged(Update::new().push("meta", "v")));
        assert!(!flagged(Update::new().push("list", "v")));
        assert!(!flagged(Update::new().push("nums", 1)));
    }

    #[test]
    fn incs_of_values_that_may_be_null_or_not_numbers_are_flagged() {
        assert!(flagged(Update::new().inc("f", 1.5)));
        assert!(flagged(Update::new().inc("meta", 2)));
        assert!(flagged(Update::new().inc("weights.w", 0.5)));
        assert!(!flagged(Update::new().inc("n", 1)));
        assert!(!flagged(Update::new().set("f", 1.5).set("tags", json!([]))));
    }

    #[test]
    fn the_reference_update_replaces_null_and_scalar_parents() {
        let s = schema();
        let u = s
            .check_update(&Update::new().set("meta.x", 1).push("tags", "v"))
            .unwrap();
        let mut doc = base(json!({"meta": null, "tags": null}));
        assert!(s.apply_update_to(&mut doc, &u, false).unwrap());
        assert_eq!(doc["meta"], json!({"x": 1}));
        assert_eq!(doc["tags"], json!(["v"]));
        let u = s.check_update(&Update::new().inc("meta.y.z", 2)).unwrap();
        let mut doc = base(json!({"meta": 5}));
        assert!(s.apply_update_to(&mut doc, &u, false).unwrap());
        assert_eq!(doc["meta"], json!({"y": {"z": 2}}));
    }

    #[test]
    fn an_update_the_schema_refuses_leaves_the_document_alone() {
        let s = Schema::builder("docs", "id")
            .field(Field::new("opt", FieldType::Object).optional())
            .field(Field::new("opt.a", FieldType::Int))
            .field(Field::new("opt.b", FieldType::Int).optional())
            .build();
        let u = s.check_update(&Update::new().set("opt.b", 1)).unwrap();
        let mut doc = json!({"id": "k1"});
        let err = s.apply_update_to(&mut doc, &u, false).unwrap_err();
        assert!(err.is_validation(), "{err}");
        assert!(err.to_string().contains("opt.a"), "{err}");
        assert!(err.to_string().contains("k1"), "{err}");
        assert_eq!(doc, json!({"id": "k1"}));
    }

    #[test]
    fn a_push_of_a_present_set_element_and_an_absorbed_inc_are_no_change() {
        let s = schema();
        let mut doc = base(json!({"nums": [1, 2], "meta": {"cnt": 1_i64 << 53}}));
        let before = doc.clone();
        let push = s.check_update(&Update::new().push("nums", 1)).unwrap();
        assert!(!s.apply_update_to(&mut doc, &push, false).unwrap());
        let inc = s.check_update(&Update::new().inc("meta.cnt", 0.5)).unwrap();
        assert!(!s.apply_update_to(&mut doc, &inc, false).unwrap());
        assert!(eval::values_equal(&doc, &before), "{doc}");
    }

    #[test]
    fn an_inc_past_i64_max_is_refused_for_an_int_field() {
        let s = schema();
        let u = s.check_update(&Update::new().inc("n", 1)).unwrap();
        let mut doc = base(json!({"n": i64::MAX}));
        assert!(
            s.apply_update_to(&mut doc, &u, false)
                .unwrap_err()
                .is_validation()
        );
        assert_eq!(doc["n"], json!(i64::MAX));
    }
}
