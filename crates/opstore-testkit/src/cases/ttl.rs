//! Document expiry: a [`Ticket`] is gone once its TTL after `touched_at` has passed.

use std::time::Duration;

use opstore_domain::{Entity, Filter, Query, Repository, StoreExt, Update};

use crate::Harness;
use crate::fixtures::{Ticket, store_now, strs, ticket, ticket_keys};

/// A `touched_at` that leaves the ticket `left` before it expires.
async fn touched_leaving(
    store: &dyn opstore_domain::Store,
    left: Duration,
) -> opstore_domain::Timestamp {
    let ttl = Ticket::schema().ttl().expect("tickets have a TTL").after;
    store_now(store).await.sub(ttl).add(left)
}

/// A ticket is readable before its TTL passes and gone after.
pub async fn ticket_expires_after_ttl(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Ticket>().unwrap();
    let touched = touched_leaving(&*store, Duration::from_secs(2)).await;
    repo.insert(&ticket("t", "o", 1, touched)).await.unwrap();
    assert!(repo.get("t").await.unwrap().is_some());
    h.advance(Duration::from_secs(3)).await;
    assert_eq!(repo.get("t").await.unwrap(), None);
}

/// Expired tickets are excluded from finds, pages and counts; live ones stay.
pub async fn expired_ticket_is_excluded_from_queries(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Ticket>().unwrap();
    let short = touched_leaving(&*store, Duration::from_secs(2)).await;
    let long = touched_leaving(&*store, Duration::from_secs(1800)).await;
    repo.insert(&ticket("old", "o", 5, short)).await.unwrap();
    repo.insert(&ticket("new", "o", 1, long)).await.unwrap();
    h.advance(Duration::from_secs(3)).await;
    assert_eq!(
        ticket_keys(&repo.find(&Query::new()).await.unwrap()),
        strs(&["new"])
    );
    assert_eq!(repo.count(&Filter::eq("owner", "o")).await.unwrap(), 1);
    let page = repo.find_page(&Query::new().limit(10)).await.unwrap();
    assert_eq!((ticket_keys(&page.items), page.total), (strs(&["new"]), 1));
}

/// Touching a ticket (moving `touched_at` forward) keeps it alive.
pub async fn touching_a_ticket_extends_its_life(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Ticket>().unwrap();
    let touched = touched_leaving(&*store, Duration::from_secs(2)).await;
    repo.insert(&ticket("t", "o", 1, touched)).await.unwrap();
    let now = store_now(&*store).await;
    repo.update_one("t", &Update::new().set("touched_at", now))
        .await
        .unwrap();
    h.advance(Duration::from_secs(3)).await;
    assert_eq!(
        repo.get("t").await.unwrap().map(|t| t.touched_at),
        Some(now)
    );
}

/// An expired ticket cannot be updated: it is `NotFound`.
pub async fn expired_ticket_update_is_not_found(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Ticket>().unwrap();
    let touched = touched_leaving(&*store, Duration::from_secs(2)).await;
    repo.insert(&ticket("t", "o", 1, touched)).await.unwrap();
    h.advance(Duration::from_secs(3)).await;
    let err = repo
        .update_one("t", &Update::new().set("priority", 2))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}
