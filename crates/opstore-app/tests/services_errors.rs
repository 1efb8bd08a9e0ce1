//! The error and remediation service end to end, on every backend.

#[macro_use]
mod services_support;

use std::sync::Arc;
use std::time::Duration;

use opstore_app::services::errors::{ErrorFilter, ErrorService, ErrorServiceConfig, Pagination};
use opstore_domain::entities::errors::{ErrorRecord, Priority, RemediationLog, RemediationOutcome};
use opstore_domain::{Store, Timestamp};
use services_support::t0;

on_every_backend!(
    save_generates_url_safe_ids_and_dedupes_by_fingerprint,
    last_seen_never_moves_backwards,
    list_filters_sorts_and_pages_with_total,
    update_delete_and_delete_older_than,
    remediation_logs_list_newest_first,
    stats_summarise_errors_and_remediations,
    retention_cap_drops_the_least_recently_seen,
);

fn service(store: &Arc<dyn Store>, max_errors: Option<u64>) -> ErrorService {
    ErrorService::new(store.as_ref(), ErrorServiceConfig { max_errors }).unwrap()
}

fn at(secs: u64) -> Timestamp {
    t0().add(Duration::from_secs(secs))
}

fn error(fp: &str, ns: &str, priority: Priority, secs: u64) -> ErrorRecord {
    ErrorRecord::new(
        fp,
        ns,
        &format!("pod-{fp}"),
        &format!("Connection REFUSED by {fp}"),
        priority,
        at(secs),
    )
}

fn log(error_id: &str, status: RemediationOutcome, secs: u64) -> RemediationLog {
    RemediationLog {
        id: String::new(),
        error_id: error_id.into(),
        action: "restart".into(),
        target: "ns/pod".into(),
        status,
        message: String::new(),
        timestamp: at(secs),
        dry_run: false,
    }
}

async fn save_generates_url_safe_ids_and_dedupes_by_fingerprint(store: Arc<dyn Store>) {
    let svc = service(&store, None);
    let first = svc
        .save(error("fp1", "prod", Priority::P2, 10))
        .await
        .unwrap();
    assert!(!first.id.is_empty());
    assert!(
        first
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{}",
        first.id
    );
    assert_eq!(first.count, 1);
    let again = svc
        .save(error("fp1", "prod", Priority::P2, 20))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(
        (again.count, again.first_seen, again.last_seen),
        (2, at(10), at(20))
    );
    // An earlier sighting reported late moves first seen back.
    let late = svc
        .save(error("fp1", "prod", Priority::P2, 5))
        .await
        .unwrap();
    assert_eq!(
        (late.count, late.first_seen, late.last_seen),
        (3, at(5), at(20))
    );
    assert_eq!(
        svc.get_by_fingerprint("fp1").await.unwrap(),
        Some(late.clone())
    );
    assert_eq!(svc.get(&first.id).await.unwrap(), Some(late));
    assert_eq!(svc.get("missing").await.unwrap(), None);
    assert_eq!(svc.get_by_fingerprint("missing").await.unwrap(), None);
}

async fn last_seen_never_moves_backwards(store: Arc<dyn Store>) {
    let svc = Arc::new(service(&store, None));
    svc.save(error("fp", "prod", Priority::P1, 50))
        .await
        .unwrap();
    let saves = (0..8u64).map(|i| {
        let svc = Arc::clone(&svc);
        tokio::spawn(async move {
            svc.save(error("fp", "prod", Priority::P1, 40 + i * 3))
                .await
                .unwrap()
        })
    });
    for save in saves {
        save.await.unwrap();
    }
    let stored = svc.get_by_fingerprint("fp").await.unwrap().unwrap();
    assert_eq!(stored.count, 9);
    assert_eq!(stored.first_seen, at(40));
    assert_eq!(stored.last_seen, at(61));
}

async fn list_filters_sorts_and_pages_with_total(store: Arc<dyn Store>) {
    let svc = service(&store, None);
    let a = svc
        .save(error("a", "prod", Priority::P1, 10))
        .await
        .unwrap();
    let b = svc
        .save(error("b", "prod", Priority::P3, 30))
        .await
        .unwrap();
    let c = svc.save(error("c", "dev", Priority::P2, 20)).await.unwrap();
    let mut remediated = svc
        .save(error("d", "prod", Priority::P4, 40))
        .await
        .unwrap();
    remediated.remediated = true;
    remediated.remediated_at = Some(at(41));
    svc.update(&remediated).await.unwrap();

    let ids = |page: opstore_domain::Page<ErrorRecord>| {
        page.items.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let all = svc
        .list(&ErrorFilter::default(), Pagination::default())
        .await
        .unwrap();
    assert_eq!(all.total, 4);
    assert_eq!(
        ids(all),
        vec![
            remediated.id.clone(),
            b.id.clone(),
            c.id.clone(),
            a.id.clone()
        ]
    );

    let prod = ErrorFilter {
        namespace: Some("prod".into()),
        ..Default::default()
    };
    let page = svc
        .list(
            &prod,
            Pagination {
                offset: 1,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!((page.total, ids(page)), (3, vec![b.id.clone()]));
    let beyond = svc
        .list(
            &prod,
            Pagination {
                offset: 10,
                limit: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!((beyond.total, beyond.items.len()), (3, 0));

    let severe = ErrorFilter {
        min_priority: Some(Priority::P2),
        ..Default::default()
    };
    assert_eq!(
        ids(svc.list(&severe, Pagination::default()).await.unwrap()),
        vec![c.id.clone(), a.id.clone()]
    );
    let open = ErrorFilter {
        remediated: Some(false),
        since: Some(at(20)),
        ..Default::default()
    };
    assert_eq!(
        ids(svc.list(&open, Pagination::default()).await.unwrap()),
        vec![b.id.clone(), c.id.clone()]
    );
    let search = ErrorFilter {
        search: Some("refused BY c".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(svc.list(&search, Pagination::default()).await.unwrap()),
        vec![c.id.clone()]
    );
    let pod = ErrorFilter {
        pod: Some("pod-a".into()),
        namespace: Some("prod".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(svc.list(&pod, Pagination::default()).await.unwrap()),
        vec![a.id]
    );
    let none = ErrorFilter {
        namespace: Some("nowhere".into()),
        ..Default::default()
    };
    let empty = svc.list(&none, Pagination::default()).await.unwrap();
    assert_eq!((empty.total, empty.items.len()), (0, 0));
}

async fn update_delete_and_delete_older_than(store: Arc<dyn Store>) {
    let svc = service(&store, None);
    let mut old = svc
        .save(error("old", "prod", Priority::P1, 10))
        .await
        .unwrap();
    let new = svc
        .save(error("new", "prod", Priority::P1, 100))
        .await
        .unwrap();
    old.rule_matched = "oom".into();
    svc.update(&old).await.unwrap();
    assert_eq!(svc.get(&old.id).await.unwrap().unwrap().rule_matched, "oom");
    let mut ghost = old.clone();
    ghost.id = "ghost".into();
    assert!(svc.update(&ghost).await.unwrap_err().is_not_found());

    assert_eq!(svc.delete_older_than(at(50)).await.unwrap(), 1);
    assert_eq!(svc.get(&old.id).await.unwrap(), None);
    assert!(svc.delete(&new.id).await.unwrap());
    assert!(!svc.delete(&new.id).await.unwrap());
}

async fn remediation_logs_list_newest_first(store: Arc<dyn Store>) {
    let svc = service(&store, None);
    let e = svc
        .save(error("fp", "prod", Priority::P1, 1))
        .await
        .unwrap();
    let first = svc
        .save_remediation_log(log(&e.id, RemediationOutcome::Failed, 10))
        .await
        .unwrap();
    let second = svc
        .save_remediation_log(log(&e.id, RemediationOutcome::Success, 20))
        .await
        .unwrap();
    let other = svc
        .save_remediation_log(log("other", RemediationOutcome::Skipped, 15))
        .await
        .unwrap();
    assert!(!first.id.is_empty() && first.id != second.id);
    assert_eq!(
        svc.get_remediation_log(&first.id).await.unwrap(),
        Some(first.clone())
    );

    let for_error = svc.remediation_logs_for_error(&e.id).await.unwrap();
    assert_eq!(for_error, vec![second.clone(), first.clone()]);
    assert!(
        svc.remediation_logs_for_error("unknown")
            .await
            .unwrap()
            .is_empty()
    );
    let page = svc
        .list_remediation_logs(Pagination {
            offset: 0,
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!((page.total, page.items), (3, vec![second, other]));
    assert_eq!(svc.delete_old_remediation_logs(at(12)).await.unwrap(), 1);
    assert_eq!(svc.get_remediation_log(&first.id).await.unwrap(), None);
}

async fn stats_summarise_errors_and_remediations(store: Arc<dyn Store>) {
    let svc = service(&store, None);
    let empty = svc.stats().await.unwrap();
    assert_eq!(
        (empty.total_errors, empty.last_error, empty.last_remediation),
        (0, None, None)
    );
    let e = svc
        .save(error("a", "prod", Priority::P1, 10))
        .await
        .unwrap();
    svc.save(error("b", "prod", Priority::P2, 30))
        .await
        .unwrap();
    svc.save(error("c", "dev", Priority::P1, 20)).await.unwrap();
    svc.save_remediation_log(log(&e.id, RemediationOutcome::Success, 40))
        .await
        .unwrap();
    svc.save_remediation_log(log(&e.id, RemediationOutcome::Failed, 50))
        .await
        .unwrap();
    svc.save_remediation_log(log(&e.id, RemediationOutcome::Skipped, 45))
        .await
        .unwrap();

    let stats = svc.stats().await.unwrap();
    assert_eq!(stats.total_errors, 3);
    assert_eq!(
        stats.errors_by_priority,
        [(Priority::P1, 2), (Priority::P2, 1)].into_iter().collect()
    );
    assert_eq!(
        stats.errors_by_namespace,
        [("dev".to_owned(), 1), ("prod".to_owned(), 2)]
            .into_iter()
            .collect()
    );
    assert_eq!(
        (
            stats.remediation_count,
            stats.successful_actions,
            stats.failed_actions
        ),
        (3, 1, 1)
    );
    assert_eq!(
        (stats.last_error, stats.last_remediation),
        (Some(at(30)), Some(at(50)))
    );
}

async fn retention_cap_drops_the_least_recently_seen(store: Arc<dyn Store>) {
    let svc = service(&store, Some(2));
    let a = svc
        .save(error("a", "prod", Priority::P1, 30))
        .await
        .unwrap();
    let b = svc
        .save(error("b", "prod", Priority::P1, 10))
        .await
        .unwrap();
    // A duplicate never counts against the cap.
    svc.save(error("a", "prod", Priority::P1, 31))
        .await
        .unwrap();
    let c = svc
        .save(error("c", "prod", Priority::P1, 20))
        .await
        .unwrap();
    assert_eq!(svc.get(&b.id).await.unwrap(), None);
    assert!(svc.get(&a.id).await.unwrap().is_some());
    assert!(svc.get(&c.id).await.unwrap().is_some());
    assert_eq!(svc.stats().await.unwrap().total_errors, 2);
}
