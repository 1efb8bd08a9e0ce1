//! The entities of the systems opstore serves, and opstore's own.

pub mod automation;
pub mod control_plane;
pub mod dead_letter;
pub mod errors;
pub mod health;

use crate::schema::Schema;

/// Every entity schema defined here, for migrations and code generation.
pub fn all_schemas() -> Vec<&'static Schema> {
    vec![
        dead_letter::DeadLetter::schema_ref(),
        health::HealthEventRecord::schema_ref(),
        health::MaintenanceEvent::schema_ref(),
        errors::ErrorRecord::schema_ref(),
        errors::RemediationLog::schema_ref(),
        automation::User::schema_ref(),
        automation::Job::schema_ref(),
        automation::TimeJob::schema_ref(),
        automation::EventJob::schema_ref(),
        automation::ConditionJob::schema_ref(),
        automation::Task::schema_ref(),
        automation::Keeper::schema_ref(),
        automation::ApiKey::schema_ref(),
        control_plane::Cluster::schema_ref(),
        control_plane::ClusterJob::schema_ref(),
        control_plane::JobLock::schema_ref(),
        control_plane::AuditEvent::schema_ref(),
        control_plane::UsageSample::schema_ref(),
        control_plane::ClusterOutputs::schema_ref(),
        control_plane::RbacMapping::schema_ref(),
    ]
}

#[cfg(test)]
mod tests;
