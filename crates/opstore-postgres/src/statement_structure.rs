//! No caller value changes the structure of a generated SQL statement: every
//! value is a bound `$n` parameter.
//!
//! Each case translates a hostile filter, sort or update and its neutral twin
//! (same shape, harmless values): the SQL text must be identical, every
//! placeholder `$1..$n` must appear, and the bound values must be of the same
//! kinds. The translator is private, so this lives in the crate; it needs no
//! server. `OPSTORE_SOAK_CASES` sets the number of cases (default 256).

use std::collections::BTreeSet;

use opstore_domain::{Filter, Query, Schema, Update};
use opstore_testkit::hostile::{self, Neutral};
use proptest::prop_assert_eq;
use proptest::test_runner::TestCaseError;

use crate::translate::{Bind, Dialect, Sql, Translator};

/// SQL text and the kinds of its bound values.
#[derive(Debug, PartialEq)]
struct Shape {
    text: String,
    binds: Vec<std::mem::Discriminant<Bind>>,
}

/// Checks that the placeholders of `text` are exactly `$1..$n` for `n` binds.
fn shape(text: String, sql: &Sql) -> Result<Shape, TestCaseError> {
    let mut used = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits: String = text[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let n: usize = digits
                .parse()
                .map_err(|_| TestCaseError::fail(format!("`$` without a number in {text}")))?;
            used.insert(n);
            i += 1 + digits.len();
        } else {
            i += 1;
        }
    }
    let expected: BTreeSet<usize> = (1..=sql.binds.len()).collect();
    prop_assert_eq!(&used, &expected, "placeholders of {}", text);
    Ok(Shape {
        text,
        binds: sql.binds.iter().map(std::mem::discriminant).collect(),
    })
}

fn filter_shape(schema: &'static Schema, f: &Filter, icu: bool) -> Result<Shape, TestCaseError> {
    let checked = schema
        .check_filter(f)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut sql = Sql::new();
    let text = Translator {
        schema,
        dialect: Dialect { icu },
        sql: &mut sql,
    }
    .filter(&checked)
    .map_err(|e| TestCaseError::fail(format!("translation failed: {e}")))?;
    shape(text, &sql)
}

fn query_shape(schema: &'static Schema, q: &Query) -> Result<Shape, TestCaseError> {
    let checked = schema
        .check_filter(&q.filter)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut sql = Sql::new();
    let mut tr = Translator {
        schema,
        dialect: Dialect { icu: true },
        sql: &mut sql,
    };
    let filter = tr
        .filter(&checked)
        .map_err(|e| TestCaseError::fail(format!("translation failed: {e}")))?;
    let order = tr
        .order_by(&q.sort)
        .map_err(|e| TestCaseError::fail(format!("translation failed: {e}")))?;
    shape(format!("WHERE {filter} ORDER BY {order}"), &sql)
}

fn update_shape(
    schema: &'static Schema,
    u: &Update,
    inserting: bool,
) -> Result<Shape, TestCaseError> {
    let checked = schema
        .check_update(u)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut sql = Sql::new();
    let mut tr = Translator {
        schema,
        dialect: Dialect { icu: true },
        sql: &mut sql,
    };
    let new = tr
        .update(&checked, "doc", inserting)
        .map_err(|e| TestCaseError::fail(format!("translation failed: {e}")))?;
    let changed = tr
        .changes(&checked, "doc", "new_doc")
        .map_err(|e| TestCaseError::fail(format!("translation failed: {e}")))?;
    shape(format!("SET doc = {new} WHERE {changed}"), &sql)
}

#[test]
fn filters_keep_their_text_whatever_the_values() {
    let schema = hostile::schema();
    let filters = proptest::prop_oneof![hostile::filter(), hostile::conjunction()];
    let accepted = hostile::run("postgres", "filters", filters, |f| {
        if schema.check_filter(&f).is_err() {
            return Ok(false);
        }
        let twin = Neutral::new().filter(schema, &f);
        for icu in [true, false] {
            prop_assert_eq!(
                filter_shape(schema, &f, icu)?,
                filter_shape(schema, &twin, icu)?
            );
        }
        Ok(true)
    });
    assert!(accepted > 0);
}

#[test]
fn queries_keep_their_text_whatever_the_values() {
    let schema = hostile::schema();
    hostile::run("postgres", "queries", hostile::query(), |q| {
        if schema.check_query(&q).is_err() {
            return Ok(false);
        }
        let twin = Query {
            filter: Neutral::new().filter(schema, &q.filter),
            ..q.clone()
        };
        prop_assert_eq!(query_shape(schema, &q)?, query_shape(schema, &twin)?);
        Ok(true)
    });
}

#[test]
fn updates_keep_their_text_whatever_the_values() {
    let schema = hostile::schema();
    let accepted = hostile::run("postgres", "updates", hostile::update(), |u| {
        if schema.check_update(&u).is_err() {
            return Ok(false);
        }
        let twin = Neutral::new().update(schema, &u);
        for inserting in [false, true] {
            prop_assert_eq!(
                update_shape(schema, &u, inserting)?,
                update_shape(schema, &twin, inserting)?
            );
        }
        Ok(true)
    });
    assert!(accepted > 0);
}
