//! Case-insensitive contains: the needle is literal text, whatever LIKE or regex
//! metacharacters it holds.

use opstore_domain::{Filter, Query, Repository, StoreExt, json};

use crate::Harness;
use crate::fixtures::{Item, item, keys, strs};

type Repo = opstore_domain::CollectionRepository<Item>;

/// Notes chosen so that each metacharacter, read as a pattern, would match more.
async fn seeded(h: &impl Harness) -> (std::sync::Arc<dyn opstore_domain::Store>, Repo) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let notes = [
        ("plain", "Disk FULL on node-7"),
        ("percent", "usage 100% reached"),
        ("under", "err_code 5"),
        ("dotstar", "pattern .* here"),
        ("backslash", r"path C:\temp\x"),
        ("bracket", "list [a] item"),
        ("paren", "call (x) now"),
        ("other", "abc xyz"),
    ];
    for (id, note) in notes {
        repo.insert(&item(id).note(note).build()).await.unwrap();
    }
    repo.insert(&item("nonote").build()).await.unwrap();
    (store, repo)
}

async fn find(repo: &Repo, needle: &str) -> Vec<String> {
    keys(
        &repo
            .find(&Query::filter(Filter::contains_ci("note", needle)))
            .await
            .unwrap(),
    )
}

/// Contains ignores case in both the needle and the field.
pub async fn contains_ignores_case(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, "disk full").await, strs(&["plain"]));
    assert_eq!(find(&repo, "NODE-7").await, strs(&["plain"]));
}

/// Contains matches inside the text, not only at the start.
pub async fn contains_matches_substrings(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, "xyz").await, strs(&["other"]));
    assert_eq!(find(&repo, "nowhere").await, strs(&[]));
}

/// `%` is matched literally, not as a LIKE wildcard.
pub async fn contains_percent_is_literal(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, "%").await, strs(&["percent"]));
    assert_eq!(find(&repo, "100% R").await, strs(&["percent"]));
    assert_eq!(find(&repo, "disk%node").await, strs(&[]));
}

/// `_` is matched literally, not as a LIKE single-character wildcard.
pub async fn contains_underscore_is_literal(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, "_").await, strs(&["under"]));
    assert_eq!(find(&repo, "r_c").await, strs(&["under"]));
    assert_eq!(find(&repo, "k_f").await, strs(&[]));
}

/// `.*` is matched literally, not as a regex.
pub async fn contains_dot_star_is_literal(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, ".*").await, strs(&["dotstar"]));
    assert_eq!(find(&repo, "d.*e").await, strs(&[]));
}

/// A backslash is matched literally, not as an escape.
pub async fn contains_backslash_is_literal(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, r"\").await, strs(&["backslash"]));
    assert_eq!(find(&repo, r"c:\TEMP\").await, strs(&["backslash"]));
    assert_eq!(find(&repo, r"\t").await, strs(&["backslash"]));
}

/// `[` is matched literally, not as a character class.
pub async fn contains_bracket_is_literal(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, "[").await, strs(&["bracket"]));
    assert_eq!(find(&repo, "[a]").await, strs(&["bracket"]));
}

/// `(` is matched literally, not as a group.
pub async fn contains_paren_is_literal(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, "(").await, strs(&["paren"]));
    assert_eq!(find(&repo, "(X)").await, strs(&["paren"]));
}

/// An empty needle matches every document where the field is present.
pub async fn contains_empty_needle_matches_present_fields(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let found = find(&repo, "").await;
    assert_eq!(found.len(), 8);
    assert!(!found.contains(&"nonote".to_owned()));
}

/// Contains never matches a document without the field.
pub async fn contains_never_matches_absent_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let f = Filter::contains_ci("note", "x").not();
    let found = keys(&repo.find(&Query::filter(f)).await.unwrap());
    assert!(found.contains(&"nonote".to_owned()), "{found:?}");
    assert!(!find(&repo, "x").await.contains(&"nonote".to_owned()));
}

/// Contains works on nested declared fields and JSON sub-paths.
pub async fn contains_on_nested_and_json_paths(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(
        &item("a")
            .state("Quarantined")
            .meta(json!({"msg": "GPU Xid 79"}))
            .build(),
    )
    .await
    .unwrap();
    repo.insert(
        &item("b")
            .state("healthy")
            .meta(json!({"msg": "ok"}))
            .build(),
    )
    .await
    .unwrap();
    let f = Filter::contains_ci("status.state", "QUARANT");
    assert_eq!(
        keys(&repo.find(&Query::filter(f)).await.unwrap()),
        strs(&["a"])
    );
    let f = Filter::contains_ci("meta.msg", "xid 7");
    assert_eq!(
        keys(&repo.find(&Query::filter(f)).await.unwrap()),
        strs(&["a"])
    );
}

/// Contains on a non-string field is `Validation`.
pub async fn contains_on_non_string_field_is_validation(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let err = repo
        .find(&Query::filter(Filter::contains_ci("count", "1")))
        .await
        .unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("count"),
        "{err}"
    );
}
