//! An idempotent API call: a client creates a cluster with an idempotency key and,
//! not having seen the answer, sends the same request again. The retry gets the
//! stored response instead of a second cluster; the same key with a different
//! request is refused rather than answered wrongly.
//!
//! `cargo run -p opstore --example idempotent_call` runs it on the embedded
//! memory store; set `OPSTORE_URL` (e.g. `postgres://app:secret@db/ops`) for a server.

use std::time::Duration;

use opstore::prelude::*;
use opstore::services::control_plane::{ControlPlaneService, Idempotent};
use opstore::services::new_id;

/// `POST /clusters`: the handler an API server would run for each request.
async fn create_cluster(
    plane: &ControlPlaneService,
    key: &str,
    body: &Value,
) -> Result<Idempotent> {
    // The fingerprint identifies the request; a hash of the body is typical.
    let fingerprint = body.to_string();
    plane
        .idempotent(
            key,
            &fingerprint,
            Duration::from_secs(24 * 3600),
            || async {
                let now = Timestamp::now();
                let mut doc = body.clone();
                doc["id"] = json!("");
                doc["status"] = json!("PENDING");
                (doc["created_at"], doc["updated_at"]) = (json!(now), json!(now));
                let cluster: Cluster = serde_json::from_value(doc)
                    .map_err(|e| StoreError::Validation(format!("bad request: {e}")))?;
                let created = plane.create_cluster(cluster).await?;
                Ok(json!({ "id": created.id, "status": created.status }))
            },
        )
        .await
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let store = DataStore::open(&StoreConfig::from_env()?).await?;
    let plane = ControlPlaneService::new(store.store().clone())?;
    let body = json!({
        "name": format!("web-{}", &new_id()[..8]), "platform": "aws", "version": "4.16",
        "profile": "small", "region": "eu-west-1", "base_domain": "example.test",
        "owner": "ann", "team": "platform", "cost_center": "cc-1",
        "requested_by": "ann", "ttl_hours": 24,
    });
    let key = format!("req-{}", new_id());

    let first = create_cluster(&plane, &key, &body).await?;
    println!("first call:  {first:?}");
    let retry = create_cluster(&plane, &key, &body).await?;
    println!("retry:       {retry:?}");
    let mut other = body.clone();
    other["region"] = json!("us-east-1");
    let misuse = create_cluster(&plane, &key, &other).await;
    println!("other body:  {misuse:?}");
    store.close().await;

    let same = matches!(&retry, Idempotent::Replayed(r) if first.clone().into_response() == *r);
    if !matches!(first, Idempotent::Fresh(_)) || !same || !misuse.is_err_and(|e| e.is_conflict()) {
        return Err("expected one fresh response, its replay and a refused misuse".into());
    }
    Ok(())
}
