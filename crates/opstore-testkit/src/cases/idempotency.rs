//! Idempotency keys: the four outcomes of `begin`, completion, abandonment and expiry.

use std::time::Duration;

use opstore_domain::{Begin, json};

use crate::Harness;

const TTL: Duration = Duration::from_secs(2);
const PAST_TTL: Duration = Duration::from_secs(3);
const LONG: Duration = Duration::from_secs(600);

/// The first `begin` of a key is `Started`.
pub async fn idem_first_begin_is_started(h: &impl Harness) {
    let store = h.store().await;
    assert_eq!(
        store
            .idempotency()
            .begin("req-1", "fp", LONG)
            .await
            .unwrap(),
        Begin::Started
    );
}

/// A second `begin` before completion is `InProgress`.
pub async fn idem_begin_while_running_is_in_progress(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("req-1", "fp", LONG).await.unwrap();
    assert_eq!(
        idem.begin("req-1", "fp", LONG).await.unwrap(),
        Begin::InProgress
    );
}

/// After `complete`, `begin` returns the stored response.
pub async fn idem_begin_after_complete_returns_response(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("req-1", "fp", LONG).await.unwrap();
    let response = json!({"cluster": "c-9", "nodes": [1, 2], "ok": true, "cost": 1.25});
    idem.complete("req-1", response.clone()).await.unwrap();
    assert_eq!(
        idem.begin("req-1", "fp", LONG).await.unwrap(),
        Begin::Completed(response)
    );
}

/// A completed key used with another fingerprint is `Mismatch`.
pub async fn idem_completed_key_with_other_fingerprint_is_mismatch(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("req-1", "fp-a", LONG).await.unwrap();
    idem.complete("req-1", json!("done")).await.unwrap();
    assert_eq!(
        idem.begin("req-1", "fp-b", LONG).await.unwrap(),
        Begin::Mismatch
    );
}

/// A running key used with another fingerprint is `Mismatch`.
pub async fn idem_running_key_with_other_fingerprint_is_mismatch(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("req-1", "fp-a", LONG).await.unwrap();
    assert_eq!(
        idem.begin("req-1", "fp-b", LONG).await.unwrap(),
        Begin::Mismatch
    );
}

/// Keys are independent of each other.
pub async fn idem_keys_are_independent(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("req-1", "fp", LONG).await.unwrap();
    assert_eq!(
        idem.begin("req-2", "fp", LONG).await.unwrap(),
        Begin::Started
    );
}

/// `complete` of a key never begun is `NotFound`.
pub async fn idem_complete_of_unknown_key_is_not_found(h: &impl Harness) {
    let store = h.store().await;
    let err = store
        .idempotency()
        .complete("never", json!(1))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

/// After `abandon` the key can be started again.
pub async fn idem_abandon_then_begin_is_started(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("req-1", "fp", LONG).await.unwrap();
    assert!(idem.abandon("req-1").await.unwrap());
    assert_eq!(
        idem.begin("req-1", "fp", LONG).await.unwrap(),
        Begin::Started
    );
}

/// `abandon` of an unknown key returns false.
pub async fn idem_abandon_of_unknown_key_is_false(h: &impl Harness) {
    let store = h.store().await;
    assert!(!store.idempotency().abandon("never").await.unwrap());
}

/// A running key is free again once its TTL has passed.
pub async fn idem_running_key_expires(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("req-1", "fp", TTL).await.unwrap();
    h.advance(PAST_TTL).await;
    assert_eq!(
        idem.begin("req-1", "other-fp", LONG).await.unwrap(),
        Begin::Started
    );
}

/// A completed key is forgotten once its TTL has passed.
pub async fn idem_completed_key_expires(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("req-1", "fp", TTL).await.unwrap();
    idem.complete("req-1", json!({"v": 1})).await.unwrap();
    assert!(matches!(
        idem.begin("req-1", "fp", TTL).await.unwrap(),
        Begin::Completed(_)
    ));
    h.advance(PAST_TTL).await;
    assert_eq!(
        idem.begin("req-1", "fp", LONG).await.unwrap(),
        Begin::Started
    );
}

/// `complete` after the key expired is `NotFound`.
pub async fn idem_complete_after_expiry_is_not_found(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("req-1", "fp", TTL).await.unwrap();
    h.advance(PAST_TTL).await;
    assert!(
        idem.complete("req-1", json!(1))
            .await
            .unwrap_err()
            .is_not_found()
    );
}

/// `purge_expired` removes exactly the expired records.
pub async fn idem_purge_removes_only_expired(h: &impl Harness) {
    let store = h.store().await;
    let idem = store.idempotency();
    idem.begin("short-1", "fp", TTL).await.unwrap();
    idem.begin("short-2", "fp", TTL).await.unwrap();
    idem.begin("long", "fp", LONG).await.unwrap();
    h.advance(PAST_TTL).await;
    assert_eq!(idem.purge_expired().await.unwrap(), 2);
    assert_eq!(
        idem.begin("long", "fp", LONG).await.unwrap(),
        Begin::InProgress
    );
}

/// Of 8 concurrent `begin`s of one key exactly one is `Started`.
pub async fn idem_concurrent_begin_starts_once(h: &impl Harness) {
    let store = h.store().await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let idem = store.idempotency();
            tokio::spawn(async move { idem.begin("contended", "fp", LONG).await })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Begin::Started => started += 1,
            Begin::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
}
