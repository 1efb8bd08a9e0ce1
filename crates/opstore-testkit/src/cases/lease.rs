//! Leases: exclusivity, expiry and takeover, fencing tokens, stale holders,
//! operator overrides and concurrent acquisition.

use std::time::Duration;

use crate::Harness;

const TTL: Duration = Duration::from_secs(2);
const PAST_TTL: Duration = Duration::from_secs(3);

/// A free lease is granted with the asked name and owner.
pub async fn lease_acquire_free_name_grants_it(h: &impl Harness) {
    let store = h.store().await;
    let lease = store
        .locks()
        .try_acquire("job/1", "worker-a", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((lease.name(), lease.owner()), ("job/1", "worker-a"));
}

/// The lease expires a TTL after it was granted (backend clock).
pub async fn lease_expiry_is_ttl_after_grant(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let a = locks.try_acquire("x", "a", TTL).await.unwrap().unwrap();
    let b = locks
        .try_acquire("y", "b", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let gap = b.expires_at().since(a.expires_at());
    assert!(
        gap >= Duration::from_secs(28),
        "30s lease expires only {gap:?} after a 2s one"
    );
}

/// A live lease is exclusive: another owner gets `None`.
pub async fn lease_is_exclusive_while_live(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let held = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    assert_eq!(locks.try_acquire("job", "b", TTL).await.unwrap(), None);
    assert_eq!(
        locks.current("job").await.unwrap().map(|l| l.token()),
        Some(held.token())
    );
}

/// Different names are independent.
pub async fn leases_on_different_names_are_independent(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    assert!(locks.try_acquire("one", "a", TTL).await.unwrap().is_some());
    assert!(locks.try_acquire("two", "b", TTL).await.unwrap().is_some());
}

/// An expired lease can be taken over, with a higher fencing token.
pub async fn lease_takeover_after_expiry_gets_higher_token(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let first = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    h.advance(PAST_TTL).await;
    let second = locks.try_acquire("job", "b", TTL).await.unwrap().unwrap();
    assert_eq!(second.owner(), "b");
    assert!(
        second.token() > first.token(),
        "{} !> {}",
        second.token(),
        first.token()
    );
}

/// Renewing keeps the lease past its original expiry.
pub async fn lease_renew_extends_life(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let lease = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    h.advance(Duration::from_secs(1)).await;
    let renewed = locks.renew(&lease, Duration::from_secs(4)).await.unwrap();
    assert!(renewed.expires_at() > lease.expires_at());
    h.advance(Duration::from_secs(2)).await;
    assert_eq!(locks.try_acquire("job", "b", TTL).await.unwrap(), None);
    locks.check(&renewed).await.unwrap();
}

/// Renewing keeps the fencing token: it is the same holding.
pub async fn lease_renew_keeps_token(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let lease = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    let renewed = locks.renew(&lease, TTL).await.unwrap();
    assert_eq!((renewed.token(), renewed.owner()), (lease.token(), "a"));
}

/// Renew by a holder whose lease was taken over is `LockLost`.
pub async fn lease_renew_by_stale_holder_is_lock_lost(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let stale = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    h.advance(PAST_TTL).await;
    let fresh = locks.try_acquire("job", "b", TTL).await.unwrap().unwrap();
    let err = locks.renew(&stale, TTL).await.unwrap_err();
    assert!(err.is_lock_lost(), "{err}");
    assert_eq!(locks.current("job").await.unwrap(), Some(fresh));
}

/// Renew of an expired lease nobody took over is still `LockLost`.
pub async fn lease_renew_after_expiry_is_lock_lost(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let lease = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    h.advance(PAST_TTL).await;
    let err = locks.renew(&lease, TTL).await.unwrap_err();
    assert!(err.is_lock_lost(), "{err}");
}

/// Release by a holder whose lease was taken over is `LockLost` and frees nothing.
pub async fn lease_release_by_stale_holder_is_lock_lost(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let stale = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    h.advance(PAST_TTL).await;
    let fresh = locks.try_acquire("job", "b", TTL).await.unwrap().unwrap();
    let err = locks.release(&stale).await.unwrap_err();
    assert!(err.is_lock_lost(), "{err}");
    locks.check(&fresh).await.unwrap();
}

/// After a release another owner can acquire at once.
pub async fn lease_release_frees_it(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let lease = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    locks.release(&lease).await.unwrap();
    assert_eq!(locks.current("job").await.unwrap(), None);
    assert!(locks.try_acquire("job", "b", TTL).await.unwrap().is_some());
}

/// Release then reacquire by the same owner gets a higher token.
pub async fn lease_reacquire_after_release_gets_higher_token(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let first = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    locks.release(&first).await.unwrap();
    let second = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    assert!(second.token() > first.token());
}

/// Releasing twice: the second release is `LockLost`.
pub async fn lease_double_release_is_lock_lost(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let lease = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    locks.release(&lease).await.unwrap();
    assert!(locks.release(&lease).await.unwrap_err().is_lock_lost());
}

/// Tokens increase across many acquisitions of one name.
pub async fn lease_tokens_strictly_increase(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let mut last = 0;
    for i in 0..5 {
        let lease = locks
            .try_acquire("job", &format!("owner{i}"), TTL)
            .await
            .unwrap()
            .unwrap();
        assert!(lease.token() > last, "token {} after {last}", lease.token());
        last = lease.token();
        locks.release(&lease).await.unwrap();
    }
}

/// `check` passes for the live holder and is `LockLost` after expiry or release.
pub async fn lease_check_reports_liveness(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let a = locks.try_acquire("a", "o", TTL).await.unwrap().unwrap();
    let b = locks
        .try_acquire("b", "o", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    locks.check(&a).await.unwrap();
    h.advance(PAST_TTL).await;
    assert!(locks.check(&a).await.unwrap_err().is_lock_lost());
    locks.check(&b).await.unwrap();
    locks.release(&b).await.unwrap();
    assert!(locks.check(&b).await.unwrap_err().is_lock_lost());
}

/// `current` shows the live lease and nothing once it has expired.
pub async fn lease_current_ignores_expired(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    assert_eq!(locks.current("job").await.unwrap(), None);
    let lease = locks.try_acquire("job", "a", TTL).await.unwrap().unwrap();
    assert_eq!(locks.current("job").await.unwrap(), Some(lease));
    h.advance(PAST_TTL).await;
    assert_eq!(locks.current("job").await.unwrap(), None);
}

/// `list` shows every live lease and no expired or released one.
pub async fn lease_list_shows_only_live(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    locks.try_acquire("short", "a", TTL).await.unwrap().unwrap();
    locks
        .try_acquire("long", "b", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let gone = locks
        .try_acquire("released", "c", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    locks.release(&gone).await.unwrap();
    h.advance(PAST_TTL).await;
    let names: Vec<String> = locks
        .list()
        .await
        .unwrap()
        .iter()
        .map(|l| l.name().to_owned())
        .collect();
    assert_eq!(names, ["long"]);
}

/// `force_release` drops a live lease; its holder then gets `LockLost`.
pub async fn lease_force_release_drops_holder(h: &impl Harness) {
    let store = h.store().await;
    let locks = store.locks();
    let lease = locks
        .try_acquire("job", "a", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(locks.force_release("job").await.unwrap());
    assert!(locks.renew(&lease, TTL).await.unwrap_err().is_lock_lost());
    let next = locks.try_acquire("job", "b", TTL).await.unwrap().unwrap();
    assert!(next.token() > lease.token());
}

/// `force_release` of a free name returns false.
pub async fn lease_force_release_of_free_name_is_false(h: &impl Harness) {
    let store = h.store().await;
    assert!(
        !store
            .locks()
            .force_release("nobody-holds-this")
            .await
            .unwrap()
    );
}

/// Of 8 concurrent acquirers exactly one wins.
pub async fn lease_concurrent_acquisition_has_one_winner(h: &impl Harness) {
    let store = h.store().await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let locks = store.locks();
            tokio::spawn(async move {
                locks
                    .try_acquire("contended", &format!("w{i}"), Duration::from_secs(60))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(lease) = task.await.unwrap().unwrap() {
            winners.push(lease);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        store.locks().current("contended").await.unwrap(),
        Some(winners.remove(0))
    );
}

/// A malformed lease name is `Validation`.
pub async fn lease_malformed_name_is_validation(h: &impl Harness) {
    let store = h.store().await;
    for name in ["", "has space", "semi;colon", "quote'"] {
        let err = store.locks().try_acquire(name, "a", TTL).await.unwrap_err();
        assert!(err.is_validation(), "{name:?}: {err}");
    }
}
