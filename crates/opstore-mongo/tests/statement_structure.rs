//! No caller value changes the structure of a generated MongoDB statement: every
//! value is a BSON value in operand position, never a key or an operator.
//!
//! Each case translates a hostile filter, update or query and its neutral twin
//! (same shape, harmless values) and compares their key skeletons: every key,
//! every nesting, and the BSON type of every value must be the same. Needs no
//! server. `OPSTORE_SOAK_CASES` sets the number of cases (default 256).

use std::fmt;

use mongodb::bson::{Bson, Document};
use opstore_mongo::translate;
use opstore_testkit::hostile::{self, Neutral};
use proptest::test_runner::TestCaseError;

/// The keys and nesting of a BSON value, with each value reduced to its type.
#[derive(PartialEq)]
enum Skeleton {
    Doc(Vec<(String, Skeleton)>),
    Array(Vec<Skeleton>),
    Leaf(mongodb::bson::spec::ElementType),
}

impl fmt::Debug for Skeleton {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Keys are printed escaped and cut, so a huge key stays readable.
            Skeleton::Doc(entries) => f
                .debug_map()
                .entries(
                    entries
                        .iter()
                        .map(|(k, v)| (k.chars().take(40).collect::<String>(), v)),
                )
                .finish(),
            Skeleton::Array(items) => f.debug_list().entries(items).finish(),
            Skeleton::Leaf(t) => write!(f, "{t:?}"),
        }
    }
}

fn skeleton(b: &Bson) -> Skeleton {
    match b {
        Bson::Document(d) => doc_skeleton(d),
        Bson::Array(items) => Skeleton::Array(items.iter().map(skeleton).collect()),
        other => Skeleton::Leaf(other.element_type()),
    }
}

fn doc_skeleton(d: &Document) -> Skeleton {
    Skeleton::Doc(d.iter().map(|(k, v)| (k.clone(), skeleton(v))).collect())
}

#[test]
fn filters_keep_their_structure_whatever_the_values() {
    let schema = hostile::schema();
    let filters = proptest::prop_oneof![hostile::filter(), hostile::conjunction()];
    let accepted = hostile::run("mongo", "filters", filters, |f| {
        let Ok(checked) = schema.check_filter(&f) else {
            return Ok(false);
        };
        let twin = schema
            .check_filter(&Neutral::new().filter(schema, &f))
            .map_err(|e| TestCaseError::fail(format!("neutral twin rejected: {e}")))?;
        for prefix in ["", "fullDocument."] {
            let hostile = translate::filter(schema, &checked, prefix);
            let neutral = translate::filter(schema, &twin, prefix);
            proptest::prop_assert_eq!(doc_skeleton(&hostile), doc_skeleton(&neutral));
        }
        Ok(true)
    });
    assert!(accepted > 0);
}

#[test]
fn updates_keep_their_structure_whatever_the_values() {
    let schema = hostile::schema();
    let accepted = hostile::run("mongo", "updates", hostile::update(), |u| {
        let Ok(checked) = schema.check_update(&u) else {
            return Ok(false);
        };
        let twin = schema
            .check_update(&Neutral::new().update(schema, &u))
            .map_err(|e| TestCaseError::fail(format!("neutral twin rejected: {e}")))?;
        match (
            translate::update(schema, &checked),
            translate::update(schema, &twin),
        ) {
            (Ok(hostile), Ok(neutral)) => {
                proptest::prop_assert_eq!(doc_skeleton(&hostile), doc_skeleton(&neutral));
            }
            // Object keys that MongoDB would not keep as data (`$x`, `a.b`) are
            // refused before anything is sent; the twin keeps those keys.
            (Err(h), Err(n)) => {
                proptest::prop_assert!(h.is_validation() && n.is_validation(), "{h} / {n}");
            }
            (h, n) => {
                return Err(TestCaseError::fail(format!(
                    "hostile and neutral updates differ in outcome: {:?} / {:?}",
                    h.map(|d| doc_skeleton(&d)),
                    n.map(|d| doc_skeleton(&d))
                )));
            }
        }
        Ok(true)
    });
    assert!(accepted > 0);
}

#[test]
fn queries_keep_their_structure_whatever_the_values() {
    let schema = hostile::schema();
    hostile::run("mongo", "queries", hostile::query(), |q| {
        let Ok(checked) = schema.check_query(&q) else {
            return Ok(false);
        };
        let filter = schema
            .check_filter(&checked.filter)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let twin = schema
            .check_filter(&Neutral::new().filter(schema, &checked.filter))
            .map_err(|e| TestCaseError::fail(format!("neutral twin rejected: {e}")))?;
        let hostile = translate::filter(schema, &filter, "");
        let neutral = translate::filter(schema, &twin, "");
        proptest::prop_assert_eq!(doc_skeleton(&hostile), doc_skeleton(&neutral));
        // Sort documents hold only schema paths and directions.
        let sort = translate::sort(schema, &checked.sort);
        for (key, dir) in &sort {
            proptest::prop_assert!(schema.resolve(key).is_ok() || key == "_id", "{key}");
            proptest::prop_assert!(matches!(dir, Bson::Int32(1 | -1)), "{dir:?}");
        }
        Ok(true)
    });
}
