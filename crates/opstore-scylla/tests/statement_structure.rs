//! No caller value changes the structure of a generated CQL statement: every
//! value is a bound `?` parameter.
//!
//! Each case plans the read of a hostile filter and of its neutral twin (same
//! shape, harmless values) and compares the statements: the same CQL texts, and
//! as many `?` markers as bound values in each. Writes of hostile documents bind
//! exactly one value per marker. Needs no server. `OPSTORE_SOAK_CASES` sets the
//! number of cases (default 256).

use std::sync::LazyLock;

use opstore_domain::{eval, json};
use opstore_scylla::ScanPolicy;
use opstore_scylla::planner::plan;
use opstore_scylla::table::TableLayout;
use opstore_scylla::value::CqlValue;
use opstore_testkit::hostile::{self, Neutral};
use proptest::prop_assert_eq;
use proptest::test_runner::TestCaseError;

static LAYOUT: LazyLock<TableLayout> =
    LazyLock::new(|| TableLayout::new("opstore", hostile::schema()));

fn markers(cql: &str) -> usize {
    cql.matches('?').count()
}

/// The planned statements: sorted texts with their value counts, checked for
/// one value per marker.
fn statements(
    filter: &opstore_domain::Filter,
    policy: ScanPolicy,
) -> Result<Option<Vec<(String, usize)>>, TestCaseError> {
    let Ok(plan) = plan(&LAYOUT, filter, policy, "find") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (cql, values) in plan.statements(&LAYOUT) {
        prop_assert_eq!(markers(&cql), values.len(), "{}", cql);
        out.push((cql, values.len()));
    }
    out.sort();
    Ok(Some(out))
}

#[test]
fn planned_reads_keep_their_text_whatever_the_values() {
    let schema = hostile::schema();
    let filters = proptest::prop_oneof![hostile::filter(), hostile::conjunction()];
    let accepted = hostile::run("scylla", "reads", filters, |f| {
        if schema.check_filter(&f).is_err() {
            return Ok(false);
        }
        let twin = Neutral::new().filter(schema, &f);
        schema
            .check_filter(&twin)
            .map_err(|e| TestCaseError::fail(format!("neutral twin rejected: {e}")))?;
        for policy in [ScanPolicy::Strict, ScanPolicy::Bounded { max_rows: 1000 }] {
            prop_assert_eq!(statements(&f, policy)?, statements(&twin, policy)?);
        }
        Ok(true)
    });
    assert!(accepted > 0);
}

#[test]
fn writes_bind_one_value_per_marker_whatever_the_document() {
    let schema = hostile::schema();
    let strategy = (hostile::hostile_text(), hostile::update());
    let accepted = hostile::run("scylla", "writes", strategy, |(key, update)| {
        let Ok(update) = schema.check_update(&update) else {
            return Ok(false);
        };
        let mut doc = json!({
            "id": key, "name": "a", "count": 1, "price": 1.5, "active": true,
            "at": "2026-01-01T00:00:00.000000Z",
        });
        eval::apply_update(&mut doc, &update, true);
        if schema.check_document(&doc).is_err() {
            return Ok(false);
        }
        let insert = LAYOUT
            .insert_values(&doc, "insert", Some(60))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for conditional in [false, true] {
            prop_assert_eq!(markers(&LAYOUT.insert_cql(conditional)), insert.len());
        }
        let update_values = LAYOUT
            .update_values(&doc, "update", Some(60), &doc.to_string())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(markers(&LAYOUT.update_cas_cql()), update_values.len());
        let key_values = LAYOUT
            .pk_values(&doc)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(markers(&LAYOUT.delete_cas_cql()), key_values.len() + 1);
        // The hostile key travels as a value, never as text.
        prop_assert_eq!(
            &key_values[0],
            &CqlValue::Text(doc["id"].as_str().unwrap_or_default().to_owned())
        );
        Ok(true)
    });
    assert!(accepted > 0);
}
