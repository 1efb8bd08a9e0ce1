//! Every entity serializes to a document its schema accepts and reads back equal.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::all_schemas;
use super::automation::*;
use super::control_plane::*;
use super::errors::*;
use super::health::*;
use crate::schema::Entity;
use crate::time::Timestamp;
use crate::{from_document, to_document};

fn t() -> Timestamp {
    Timestamp::from_micros(1_767_225_600_000_000)
}

fn round_trip<T: Entity + PartialEq + std::fmt::Debug>(value: T) {
    let doc = to_document(&value).unwrap();
    T::schema()
        .check_document(&doc)
        .unwrap_or_else(|e| panic!("{}: {e}\n{doc:#}", T::schema().name()));
    assert_eq!(from_document::<T>(doc).unwrap(), value);
}

#[test]
fn every_schema_builds_and_names_are_distinct() {
    let schemas = all_schemas();
    let mut names: Vec<&str> = schemas.iter().map(|s| s.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), schemas.len());
}

#[test]
fn health_event_uses_the_monitor_field_names() {
    let mut event = HealthEvent {
        node_name: "node-1".into(),
        check_name: "xid".into(),
        ..HealthEvent::default()
    };
    event.entities_impacted.push(ImpactedEntity {
        entity_type: "GPU".into(),
        entity_value: "0".into(),
    });
    event.metadata.insert("rack".into(), "r1".into());
    event.quarantine_overrides = Some(BehaviourOverrides {
        force: true,
        skip: false,
    });
    event.idempotency_key = Some("k1".into());
    let mut status = HealthEventStatus {
        node_quarantined: Some(QuarantineStatus::AlreadyQuarantined),
        ..Default::default()
    };
    status.user_pods_eviction.status = OperationState::AlreadyDrained;
    let record = HealthEventRecord {
        id: "e1".into(),
        created_at: t(),
        event,
        status,
    };
    let doc = to_document(&record).unwrap();
    assert_eq!(doc["healthevent"]["nodename"], json!("node-1"));
    assert_eq!(
        doc["healtheventstatus"]["nodequarantined"],
        json!("AlreadyQuarantined")
    );
    assert_eq!(
        doc["healtheventstatus"]["userpodsevictionstatus"]["status"],
        json!("AlreadyDrained")
    );
    assert!(doc.get("createdAt").is_some());
    let schema = HealthEventRecord::schema();
    for path in [
        "healthevent.nodename",
        "healtheventstatus.nodequarantined",
        "createdAt",
    ] {
        assert!(schema.field(path).is_some_and(|f| f.is_indexed()), "{path}");
    }
    round_trip(record);
    round_trip(MaintenanceEvent {
        id: "m1".into(),
        csp: "gcp".into(),
        cluster_name: "c".into(),
        node_name: "node-1".into(),
        resource_id: None,
        maintenance_type: "SCHEDULED".into(),
        status: "DETECTED".into(),
        csp_status: Some("PENDING".into()),
        scheduled_start: Some(t()),
        scheduled_end: None,
        actual_start: None,
        actual_end: None,
        recommended_action: None,
        metadata: BTreeMap::new(),
        received_at: t(),
        updated_at: t(),
    });
}

#[test]
fn error_and_remediation_round_trip() {
    let mut err = ErrorRecord::new("fp", "ns", "pod", "boom", Priority::P2, t());
    err.id = "e1".into();
    err.labels.insert("app".into(), "web".into());
    round_trip(err);
    assert_eq!(
        Priority::P2.at_least().collect::<Vec<_>>(),
        vec![Priority::P1, Priority::P2]
    );
    round_trip(RemediationLog {
        id: "r1".into(),
        error_id: "e1".into(),
        action: "restart".into(),
        target: "ns/pod".into(),
        status: RemediationOutcome::Skipped,
        message: String::new(),
        timestamp: t(),
        dry_run: true,
    });
}

#[test]
fn automation_entities_round_trip() {
    let target = TargetCall {
        target_chain_id: "1".into(),
        target_contract_address: "0xabc".into(),
        target_function: "run".into(),
        abi: "[]".into(),
        arg_type: 0,
        arguments: vec!["b".into(), "a".into()],
        dynamic_arguments_script_url: None,
    };
    round_trip(TimeJob {
        job_id: "1".into(),
        task_definition_id: 1,
        schedule_type: "cron".into(),
        time_interval: 0,
        cron_expression: Some("* * * * *".into()),
        specific_schedule: None,
        next_execution_timestamp: t(),
        target: target.clone(),
        is_completed: false,
        last_executed_at: None,
        expiration_time: Some(t()),
    });
    round_trip(ConditionJob {
        job_id: "2".into(),
        task_definition_id: 5,
        recurring: true,
        condition_type: "between".into(),
        upper_limit: 10.5,
        lower_limit: 1.0,
        value_source_type: "api".into(),
        value_source_url: "https://example.test".into(),
        selected_key_route: None,
        target,
        is_completed: false,
        last_executed_at: None,
        expiration_time: None,
    });
    round_trip(User {
        user_id: "7".into(),
        user_address: "0x1".into(),
        email_id: None,
        job_ids: BTreeSet::from(["1".to_owned(), "2".to_owned()]),
        opx_consumed: "123456789012345678901234567890".into(),
        total_jobs: 2,
        total_tasks: 0,
        created_at: t(),
        last_updated_at: t(),
    });
    round_trip(ApiKey {
        key: "k".into(),
        owner: "o".into(),
        is_active: true,
        rate_limit: 60,
        success_count: 0,
        failed_count: 0,
        last_used: None,
        created_at: t(),
    });
}

#[test]
fn control_plane_entities_round_trip() {
    let cluster = Cluster {
        id: "clu_1".into(),
        name: "dev".into(),
        platform: "aws".into(),
        version: "4.16".into(),
        profile: "small".into(),
        region: "us-east-1".into(),
        base_domain: "example.test".into(),
        owner: "ann".into(),
        team: "t".into(),
        cost_center: "cc".into(),
        status: ClusterStatus::DestroyFailed,
        requested_by: "arn:aws:iam::1:user/ann".into(),
        ttl_hours: 24,
        destroy_at: None,
        tags: BTreeMap::new(),
        created_at: t(),
        updated_at: t(),
        destroyed_at: None,
        active_key: Some(Cluster::active_key_for("dev", "aws", "example.test")),
    };
    assert_eq!(
        to_document(&cluster).unwrap()["status"],
        json!("DESTROY_FAILED")
    );
    round_trip(cluster);
    let job: ClusterJob = serde_json::from_value(json!({
        "id": "job_1", "cluster_id": "clu_1", "job_type": "SCALE_WORKERS", "status": "PENDING",
        "attempt": 1, "created_at": t(), "updated_at": t()
    }))
    .unwrap();
    assert_eq!(job.max_attempts, DEFAULT_MAX_ATTEMPTS);
    round_trip(job);
    let key = UsageSample::key_for("clu_1", t());
    round_trip(UsageSample {
        id: key,
        cluster_id: "clu_1".into(),
        sample_time: t(),
        state: "READY".into(),
        control_plane_replicas: 3,
        worker_replicas: 2,
        estimated_hourly_cost: Some(1.25),
        metadata: None,
    });
    round_trip(ClusterOutputs {
        cluster_id: "clu_1".into(),
        api_url: Some("https://api".into()),
        ..Default::default()
    });
}
