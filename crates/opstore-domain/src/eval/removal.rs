//! Whether an update changes every document a filter matches, decided from the
//! two alone. An adapter that knows this counts the documents it modified as
//! the documents matched, without scanning the filter a second time.

use crate::check::is_prefix;
use crate::query::{Filter, Update, UpdateOp};

/// True when every document `filter` matches holds a field, present and not
/// null, that `update` removes: applying the update then changes each of them.
///
/// Conservative: `false` says nothing about the documents.
pub fn removes_a_matched_field(filter: &Filter, update: &Update) -> bool {
    match filter {
        Filter::And(filters) => filters.iter().any(|f| removes_a_matched_field(f, update)),
        Filter::Or(filters) => {
            !filters.is_empty() && filters.iter().all(|f| removes_a_matched_field(f, update))
        }
        Filter::Eq(path, v) if !v.is_null() => removes(update, path),
        Filter::In(path, vs) if !vs.is_empty() && vs.iter().all(|v| !v.is_null()) => {
            removes(update, path)
        }
        Filter::Exists(path, true) => removes(update, path),
        _ => false,
    }
}

/// Whether `path` is absent after `update`, whatever the document held: the
/// last operator writing the path, a parent or a child of it unsets the path
/// or a parent.
fn removes(update: &Update, path: &str) -> bool {
    let last = update
        .ops
        .iter()
        .rev()
        // Applies only when an upsert inserts, never to a matched document.
        .filter(|op| !matches!(op, UpdateOp::SetOnInsert(..)))
        .find(|op| {
            let p = op.path();
            p == path || is_prefix(p, path) || is_prefix(path, p)
        });
    match last {
        Some(UpdateOp::Unset(p)) => p == path || is_prefix(p, path),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unset(path: &str) -> Update {
        Update::new().set("status", "done").unset(path)
    }

    #[test]
    fn an_unset_field_the_filter_pins_changes_every_match() {
        let f = Filter::eq("token", "t1");
        assert!(removes_a_matched_field(&f, &unset("token")));
        let f = Filter::exists("until").and(Filter::eq("status", "running"));
        assert!(removes_a_matched_field(&f, &unset("until")));
        let f = Filter::is_in("token", ["a", "b"]);
        assert!(removes_a_matched_field(&f, &unset("token")));
    }

    #[test]
    fn every_alternative_must_pin_the_field() {
        let both = Filter::any_of([Filter::eq("token", "a"), Filter::eq("token", "b")]);
        assert!(removes_a_matched_field(&both, &unset("token")));
        let one = Filter::any_of([Filter::eq("token", "a"), Filter::eq("status", "x")]);
        assert!(!removes_a_matched_field(&one, &unset("token")));
        assert!(!removes_a_matched_field(
            &Filter::any_of(Vec::<Filter>::new()),
            &unset("token")
        ));
    }

    #[test]
    fn filters_that_do_not_pin_a_present_field_say_nothing() {
        for f in [
            Filter::All,
            Filter::eq("token", serde_json::Value::Null),
            Filter::ne("token", "a"),
            Filter::Exists("token".into(), false),
            Filter::gt("token", "a"),
            Filter::Not(Box::new(Filter::eq("token", "a"))),
        ] {
            assert!(!removes_a_matched_field(&f, &unset("token")), "{f:?}");
        }
    }

    #[test]
    fn a_later_write_near_the_path_undoes_the_removal() {
        let f = Filter::eq("a.b", 1);
        assert!(removes_a_matched_field(&f, &Update::new().unset("a.b")));
        assert!(removes_a_matched_field(&f, &Update::new().unset("a")));
        assert!(!removes_a_matched_field(
            &f,
            &Update::new().unset("a.b").set("a.b", 2)
        ));
        // A sibling written after the parent went leaves the path absent.
        assert!(removes_a_matched_field(
            &f,
            &Update::new().unset("a").set("a.c", 2)
        ));
        let parent = Update::new()
            .unset("a")
            .set("a", serde_json::json!({"b": 2}));
        assert!(!removes_a_matched_field(&f, &parent));
        assert!(!removes_a_matched_field(&f, &Update::new().unset("a.b.c")));
        assert!(!removes_a_matched_field(&f, &Update::new().unset("a.bc")));
        assert!(removes_a_matched_field(
            &f,
            &Update::new().unset("a.b").set_on_insert("a.b", 3)
        ));
    }
}
