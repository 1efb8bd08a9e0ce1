//! Processor checkpoints: durable resume tokens per processor.

use opstore_domain::{ResumeToken, StartAt, StoreExt};

use crate::Harness;
use crate::fixtures::{item, lacks_change_feed, next_event, watch_items};

use opstore_domain::Repository;

fn token(bytes: &[u8]) -> ResumeToken {
    ResumeToken::from_bytes(bytes.to_vec())
}

/// A processor without a checkpoint loads `None`.
pub async fn checkpoint_missing_is_none(h: &impl Harness) {
    let store = h.store().await;
    assert_eq!(store.checkpoints().load("proc-a").await.unwrap(), None);
}

/// A saved checkpoint loads back byte for byte.
pub async fn checkpoint_save_then_load(h: &impl Harness) {
    let store = h.store().await;
    let cps = store.checkpoints();
    let t = token(&[0, 1, 2, 254, 255, 0]);
    cps.save("proc-a", &t).await.unwrap();
    assert_eq!(cps.load("proc-a").await.unwrap(), Some(t));
}

/// Saving again overwrites the checkpoint.
pub async fn checkpoint_save_overwrites(h: &impl Harness) {
    let store = h.store().await;
    let cps = store.checkpoints();
    cps.save("proc-a", &token(b"first")).await.unwrap();
    cps.save("proc-a", &token(b"second")).await.unwrap();
    assert_eq!(cps.load("proc-a").await.unwrap(), Some(token(b"second")));
}

/// Checkpoints of different processors are independent.
pub async fn checkpoints_are_per_processor(h: &impl Harness) {
    let store = h.store().await;
    let cps = store.checkpoints();
    cps.save("proc-a", &token(b"a")).await.unwrap();
    cps.save("proc-b", &token(b"b")).await.unwrap();
    assert_eq!(cps.load("proc-a").await.unwrap(), Some(token(b"a")));
    assert_eq!(cps.load("proc-b").await.unwrap(), Some(token(b"b")));
}

/// `delete` removes a checkpoint and reports whether one existed.
pub async fn checkpoint_delete_removes_it(h: &impl Harness) {
    let store = h.store().await;
    let cps = store.checkpoints();
    cps.save("proc-a", &token(b"a")).await.unwrap();
    assert!(cps.delete("proc-a").await.unwrap());
    assert_eq!(cps.load("proc-a").await.unwrap(), None);
    assert!(!cps.delete("proc-a").await.unwrap());
}

/// A checkpointed feed token resumes the feed right after its event.
pub async fn checkpoint_of_feed_token_resumes_feed(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<crate::fixtures::Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    let seen = next_event(&mut stream).await;
    drop(stream);
    store
        .checkpoints()
        .save("proc-a", &seen.token)
        .await
        .unwrap();
    let loaded = store.checkpoints().load("proc-a").await.unwrap().unwrap();
    let mut resumed = watch_items(&*store, StartAt::After(loaded), None)
        .await
        .unwrap();
    assert_eq!(next_event(&mut resumed).await.key, "b");
}
