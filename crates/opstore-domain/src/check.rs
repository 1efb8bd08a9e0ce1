//! Validation of the query model against a schema.
//!
//! Adapters accept only [`Checked`] values, so a field path that is not in the
//! schema, or a value of the wrong type, is a `Validation` error before any query
//! text exists. This is the guard against injection through field names.

use std::ops::Deref;

use serde_json::Value;

use crate::error::{Result, invalid};
use crate::query::{Agg, Filter, Query, Update, UpdateOp};
use crate::schema::{FieldType, Schema, scalar_accepts, type_name};

mod document_update;

/// A value that passed validation against a schema. Only this module builds one.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<T>(T);

impl<T> Deref for Checked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Checked<T> {
    /// The validated value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// A field path that passed the check for one aggregate (count-by, min, max or
/// sum), with its declared type. Adapters take the path to aggregate from a
/// `Checked<AggField>` only, as they take filter and sort paths from
/// `Checked<Filter>` and `Checked<Query>`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggField {
    path: String,
    ty: FieldType,
}

impl AggField {
    /// The dotted path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The declared type at the path.
    pub fn field_type(&self) -> FieldType {
        self.ty
    }
}

/// Most values accepted in one `in` / `nin` list.
pub const MAX_IN_LIST: usize = 10_000;

impl Schema {
    /// Validates a filter.
    pub fn check_filter(&self, filter: &Filter) -> Result<Checked<Filter>> {
        self.check_filter_inner(filter, 0)?;
        Ok(Checked(filter.clone()))
    }

    fn check_filter_inner(&self, filter: &Filter, depth: usize) -> Result<()> {
        if depth > 32 {
            return invalid(format!(
                "filter on `{}` nests deeper than 32 levels",
                self.name()
            ));
        }
        match filter {
            Filter::All => Ok(()),
            Filter::Eq(p, v) | Filter::Ne(p, v) => self.check_operand(p, v, "eq/ne"),
            Filter::Gt(p, v) | Filter::Gte(p, v) | Filter::Lt(p, v) | Filter::Lte(p, v) => {
                let ty = self.resolve(p)?;
                if !(ty.is_sortable() || ty == FieldType::Json) {
                    return invalid(format!(
                        "range comparison on non-scalar field `{p}` of `{}`",
                        self.name()
                    ));
                }
                if v.is_null() || v.is_array() || v.is_object() {
                    return invalid(format!(
                        "range comparison on `{p}` needs a scalar value, got {}",
                        type_name(v)
                    ));
                }
                self.check_operand(p, v, "range")
            }
            Filter::In(p, vs) | Filter::Nin(p, vs) => {
                if vs.len() > MAX_IN_LIST {
                    return invalid(format!(
                        "in/nin on `{p}` lists {} values; at most {MAX_IN_LIST}",
                        vs.len()
                    ));
                }
                vs.iter()
                    .try_for_each(|v| self.check_operand(p, v, "in/nin"))
            }
            Filter::Exists(p, _) => self.resolve(p).map(drop),
            Filter::ContainsCi(p, _) => match self.resolve(p)? {
                FieldType::String | FieldType::Json => Ok(()),
                ty => invalid(format!(
                    "contains on `{p}` needs a string field, `{p}` is {ty:?}"
                )),
            },
            Filter::And(fs) | Filter::Or(fs) => fs
                .iter()
                .try_for_each(|f| self.check_filter_inner(f, depth + 1)),
            Filter::Not(f) => self.check_filter_inner(f, depth + 1),
        }
    }

    fn check_operand(&self, path: &str, value: &Value, op: &str) -> Result<()> {
        let ty = self.resolve(path)?;
        if value.is_null() || accepts_operand(ty, value) {
            return Ok(());
        }
        invalid(format!(
            "{op} on `{path}` of `{}`: expected {ty:?}, got {} value",
            self.name(),
            type_name(value)
        ))
    }

    /// Validates an update.
    pub fn check_update(&self, update: &Update) -> Result<Checked<Update>> {
        if update.ops.is_empty() {
            return invalid(format!("empty update on `{}`", self.name()));
        }
        for (i, op) in update.ops.iter().enumerate() {
            let path = op.path();
            let ty = self.resolve(path)?;
            if path == self.key() {
                return invalid(format!(
                    "the key field `{path}` of `{}` cannot be updated",
                    self.name()
                ));
            }
            for other in &update.ops[..i] {
                let o = other.path();
                if o == path || is_prefix(o, path) || is_prefix(path, o) {
                    return invalid(format!("conflicting update paths `{o}` and `{path}`"));
                }
            }
            let optional = self.field(path).is_none_or(|f| f.is_optional());
            match op {
                UpdateOp::Set(_, v) | UpdateOp::SetOnInsert(_, v) => {
                    if v.is_null() {
                        // A path that is not declared but resolves to a scalar is
                        // a map entry: map values are never null (unset removes one).
                        if self.field(path).is_none() && ty != FieldType::Json {
                            return invalid(format!(
                                "`{path}` of `{}` is a map entry and cannot be null (unset it instead)",
                                self.name()
                            ));
                        }
                        if !optional {
                            return invalid(format!(
                                "`{path}` of `{}` is required and cannot be null",
                                self.name()
                            ));
                        }
                    } else {
                        self.check_value(path, ty, v)?;
                    }
                }
                UpdateOp::Unset(_) => {
                    if !optional {
                        return invalid(format!(
                            "`{path}` of `{}` is required and cannot be unset",
                            self.name()
                        ));
                    }
                }
                UpdateOp::Inc(_, v) => {
                    let ok = match ty {
                        FieldType::Int => scalar_accepts(crate::ScalarType::Int, v),
                        FieldType::Float | FieldType::Json => v.is_number(),
                        _ => false,
                    };
                    if !ok {
                        return invalid(format!(
                            "inc on `{path}` of `{}`: field is {ty:?}, increment is {}",
                            self.name(),
                            type_name(v)
                        ));
                    }
                }
                UpdateOp::Push(_, v) => {
                    let ok = match ty {
                        FieldType::List(s) | FieldType::Set(s) => scalar_accepts(s, v),
                        FieldType::Json => true,
                        _ => false,
                    };
                    if !ok {
                        return invalid(format!(
                            "push on `{path}` of `{}`: field is {ty:?}, value is {}",
                            self.name(),
                            type_name(v)
                        ));
                    }
                }
            }
        }
        Ok(Checked(update.clone()))
    }

    /// Checks a value written at `path`, including declared fields nested in it.
    fn check_value(&self, path: &str, ty: FieldType, value: &Value) -> Result<()> {
        if !ty.accepts(value) {
            return invalid(format!(
                "`{path}` of `{}` expects {ty:?}, got {} value",
                self.name(),
                type_name(value)
            ));
        }
        if ty != FieldType::Object {
            return Ok(());
        }
        let prefix = format!("{path}.");
        for field in self
            .fields()
            .iter()
            .filter(|f| f.path().starts_with(&prefix))
        {
            let rel = &field.path()[prefix.len()..];
            match crate::eval::get_path(value, rel) {
                None if field.is_optional() => {}
                None => {
                    if !rel.contains('.') {
                        return invalid(format!("`{}` is required in `{path}`", field.path()));
                    }
                }
                Some(v) if !field.ty().accepts(v) => {
                    return invalid(format!(
                        "`{}` of `{}` expects {:?}, got {} value",
                        field.path(),
                        self.name(),
                        field.ty(),
                        type_name(v)
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Validates a query (filter, sort paths, limits).
    pub fn check_query(&self, query: &Query) -> Result<Checked<Query>> {
        self.check_filter(&query.filter)?;
        for key in &query.sort {
            self.check_sortable(&key.path)?;
        }
        if query.skip > i64::MAX as u64 || query.limit > i64::MAX as u64 {
            return invalid("skip and limit must fit in a signed 64-bit integer");
        }
        Ok(Checked(query.clone()))
    }

    /// Validates a path used for sorting, min or max.
    pub fn check_sortable(&self, path: &str) -> Result<FieldType> {
        let ty = self.resolve(path)?;
        if ty.is_sortable() {
            return Ok(ty);
        }
        invalid(format!(
            "cannot sort on `{path}` of `{}`: it is {ty:?}, not a scalar",
            self.name()
        ))
    }

    /// Validates the path of a count-by (`agg` is `None`) or of `agg`.
    pub fn check_agg_field(&self, path: &str, agg: Option<Agg>) -> Result<Checked<AggField>> {
        let ty = self.check_aggregate(path, agg)?;
        Ok(Checked(AggField {
            path: path.to_owned(),
            ty,
        }))
    }

    /// Validates a single-field aggregate and returns the field type; adapters get
    /// it through [`check_agg_field`](Schema::check_agg_field), whose result
    /// carries the path.
    fn check_aggregate(&self, path: &str, agg: Option<Agg>) -> Result<FieldType> {
        match agg {
            None => {
                let ty = self.resolve(path)?;
                if ty.is_sortable() {
                    return Ok(ty);
                }
                invalid(format!(
                    "count-by on `{path}` of `{}` needs a scalar field, it is {ty:?}",
                    self.name()
                ))
            }
            Some(Agg::Sum) => {
                let ty = self.resolve(path)?;
                if matches!(ty, FieldType::Int | FieldType::Float) {
                    return Ok(ty);
                }
                invalid(format!(
                    "sum on `{path}` of `{}` needs a number field, it is {ty:?}",
                    self.name()
                ))
            }
            Some(Agg::Min | Agg::Max) => self.check_sortable(path),
        }
    }
}

fn accepts_operand(ty: FieldType, value: &Value) -> bool {
    match ty {
        FieldType::Int | FieldType::Float => value.is_number(),
        other => other.accepts(value),
    }
}

/// Whether `child` lies below `parent` (`a.b` below `a`).
pub(crate) fn is_prefix(parent: &str, child: &str) -> bool {
    child.len() > parent.len()
        && child.starts_with(parent)
        && child.as_bytes()[parent.len()] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Field, ScalarType};
    use serde_json::json;

    fn schema() -> Schema {
        Schema::builder("jobs", "id")
            .field(Field::new("count", FieldType::Int))
            .field(Field::new("name", FieldType::String).indexed())
            .field(Field::new("tags", FieldType::List(ScalarType::String)).optional())
            .field(Field::new("meta", FieldType::Json).optional())
            .build()
    }

    #[test]
    fn unknown_path_is_named() {
        let err = schema().check_filter(&Filter::eq("nope", 1)).unwrap_err();
        assert!(err.is_validation());
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn inc_on_string_is_rejected() {
        let err = schema()
            .check_update(&Update::new().inc("name", 1))
            .unwrap_err();
        assert!(err.to_string().contains("inc on `name`"), "{err}");
    }

    #[test]
    fn wrong_value_type_is_rejected() {
        assert!(schema().check_filter(&Filter::eq("count", "x")).is_err());
        assert!(schema().check_filter(&Filter::eq("count", 1.5)).is_ok());
        assert!(
            schema()
                .check_update(&Update::new().set("count", json!("1")))
                .is_err()
        );
    }

    #[test]
    fn conflicting_paths_are_rejected() {
        let u = Update::new().set("meta", json!({})).set("meta.a", 1);
        assert!(schema().check_update(&u).is_err());
    }

    #[test]
    fn null_map_entry_is_rejected_by_path() {
        let s = Schema::builder("docs", "id")
            .field(Field::new("labels", FieldType::Map(ScalarType::String)).optional())
            .field(Field::new("meta", FieldType::Json).optional())
            .build();
        for u in [
            Update::new().set("labels.team", Value::Null),
            Update::new().set_on_insert("labels.team", Value::Null),
        ] {
            let err = s.check_update(&u).unwrap_err();
            assert!(err.is_validation(), "{err}");
            assert!(err.to_string().contains("labels.team"), "{err}");
        }
        s.check_update(&Update::new().unset("labels.team")).unwrap();
        s.check_update(&Update::new().set("labels", Value::Null))
            .unwrap();
        s.check_update(&Update::new().set("meta.x", Value::Null))
            .unwrap();
    }

    #[test]
    fn sort_on_list_is_rejected() {
        assert!(
            schema()
                .check_query(&Query::new().sort_asc("tags"))
                .is_err()
        );
    }
}
