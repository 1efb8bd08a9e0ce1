//! Unit tests of the error service's own logic, against mocked repositories.

use std::sync::{Arc, Mutex};

use opstore_domain::ports::collection::MockRepository;
use opstore_domain::{Filter, StoreError, Timestamp, UpdateCount, UpdateOp, Value};

use super::*;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_micros(1_767_225_600_000_000 + secs * 1_000_000)
}

fn err_at(id: &str, first: i64, last: i64, count: i64) -> ErrorRecord {
    let mut e = ErrorRecord::new("fp", "ns", "pod", "boom", Priority::P1, t(first));
    e.id = id.into();
    e.last_seen = t(last);
    e.count = count;
    e
}

fn service(errors: MockRepository<ErrorRecord>, max_errors: Option<u64>) -> ErrorService {
    ErrorService::from_parts(
        Arc::new(errors),
        Arc::new(MockRepository::new()),
        ErrorServiceConfig { max_errors },
    )
}

#[tokio::test]
async fn a_new_fingerprint_is_inserted_with_a_generated_id_and_count_one() {
    let mut errors = MockRepository::new();
    errors.expect_get_by_field().returning(|_, _| Ok(None));
    errors.expect_insert().times(1).returning(|_| Ok(()));
    let mut input = err_at("", 1, 1, 0);
    input.count = 0;
    let saved = service(errors, None).save(input).await.unwrap();
    assert_eq!((saved.id.len(), saved.count), (32, 1));
}

#[tokio::test]
async fn a_known_fingerprint_increments_and_only_moves_times_outward() {
    let mut errors = MockRepository::new();
    errors
        .expect_get_by_field()
        .returning(|_, _| Ok(Some(err_at("e1", 10, 20, 1))));
    errors.expect_insert().never();
    errors
        .expect_update_one()
        .withf(|id, u| id == "e1" && u.ops == vec![UpdateOp::Inc("count".into(), Value::from(1))])
        .times(1)
        .returning(|_, _| Ok(err_at("e1", 10, 20, 2)));
    // Seen at 15: inside the known range, so neither bound moves and no
    // conditional write is sent.
    errors.expect_update_many().never();
    let saved = service(errors, None)
        .save(err_at("", 15, 15, 1))
        .await
        .unwrap();
    assert_eq!(
        (saved.count, saved.first_seen, saved.last_seen),
        (2, t(10), t(20))
    );
}

#[tokio::test]
async fn a_later_sighting_moves_last_seen_with_a_conditional_write() {
    let mut errors = MockRepository::new();
    errors
        .expect_get_by_field()
        .returning(|_, _| Ok(Some(err_at("e1", 10, 20, 1))));
    errors
        .expect_update_one()
        .returning(|_, _| Ok(err_at("e1", 10, 20, 2)));
    let expected = Filter::eq("id", "e1").and(Filter::lt("last_seen", t(30)));
    errors
        .expect_update_many()
        .withf(move |f, _| *f == expected)
        .times(1)
        .returning(|_, _| {
            Ok(UpdateCount {
                matched: 1,
                modified: 1,
            })
        });
    errors
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(err_at("e1", 10, 30, 2))));
    let saved = service(errors, None)
        .save(err_at("", 30, 30, 1))
        .await
        .unwrap();
    assert_eq!(saved.last_seen, t(30));
}

#[tokio::test]
async fn losing_the_insert_race_merges_into_the_winner() {
    let mut errors = MockRepository::new();
    let lookups = Arc::new(Mutex::new(0));
    let n = Arc::clone(&lookups);
    errors
        .expect_get_by_field()
        .times(2)
        .returning(move |_, _| {
            let mut n = n.lock().unwrap();
            *n += 1;
            Ok((*n == 2).then(|| err_at("winner", 5, 5, 1)))
        });
    errors
        .expect_insert()
        .times(1)
        .returning(|_| Err(StoreError::Conflict("fingerprint".into())));
    errors
        .expect_update_one()
        .times(1)
        .returning(|_, _| Ok(err_at("winner", 5, 5, 2)));
    let saved = service(errors, None)
        .save(err_at("", 5, 5, 1))
        .await
        .unwrap();
    assert_eq!((saved.id.as_str(), saved.count), ("winner", 2));
}

#[tokio::test]
async fn the_cap_deletes_the_least_recently_seen_excess() {
    let mut errors = MockRepository::new();
    errors.expect_get_by_field().returning(|_, _| Ok(None));
    errors.expect_insert().returning(|_| Ok(()));
    errors.expect_count().returning(|_| Ok(5));
    errors
        .expect_find()
        .withf(|q| q.limit == 2 && q.sort[0].path == "last_seen")
        .returning(|_| Ok(vec![err_at("old1", 1, 1, 1), err_at("old2", 2, 2, 1)]));
    errors
        .expect_delete_many()
        .withf(|f| *f == Filter::In("id".into(), vec![Value::from("old1"), Value::from("old2")]))
        .times(1)
        .returning(|_| Ok(2));
    service(errors, Some(3))
        .save(err_at("", 9, 9, 1))
        .await
        .unwrap();
}

#[test]
fn an_empty_filter_matches_everything_and_fields_combine_with_and() {
    assert_eq!(ErrorFilter::default().to_filter(), Filter::And(vec![]));
    let filter = ErrorFilter {
        namespace: Some("prod".into()),
        pod: Some(String::new()),
        min_priority: Some(Priority::P2),
        remediated: Some(false),
        since: None,
        search: Some("oom".into()),
    };
    assert_eq!(
        filter.to_filter(),
        Filter::all_of([
            Filter::eq("namespace", "prod"),
            Filter::is_in("priority", ["P1", "P2"]),
            Filter::eq("remediated", false),
            Filter::contains_ci("message", "oom"),
        ])
    );
}
