//! Leases with fencing tokens in one table; every operation is one statement and
//! expiry is judged by the database clock (`clock_timestamp()`).
//!
//! Fencing tokens come from one sequence, so they strictly increase per name
//! across takeovers and releases (a released lease's row is deleted).

use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::schema::check_name;
use opstore_domain::{Lease, LockManager, Result, StoreError, Timestamp};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::Ctx;
use crate::exec::Exec;
use crate::translate::{Bind, Sql};

const TABLE: &str = "opstore_leases";

/// The `LockManager` port.
pub(crate) struct PgLocks {
    pub exec: Exec,
}

fn micros(ttl: Duration) -> Bind {
    Bind::Int(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX))
}

fn token(lease: &Lease) -> Bind {
    Bind::Int(i64::try_from(lease.token()).unwrap_or(i64::MAX))
}

fn decode(row: &PgRow) -> Result<Lease> {
    let get = |e: sqlx::Error| StoreError::backend("decoding a lease", e);
    let name: String = row.try_get("name").map_err(get)?;
    let owner: String = row.try_get("owner").map_err(get)?;
    let token: i64 = row.try_get("token").map_err(get)?;
    let expires: chrono::DateTime<chrono::Utc> = row.try_get("expires_at").map_err(get)?;
    Ok(Lease::granted(
        name,
        owner,
        u64::try_from(token).unwrap_or(0),
        Timestamp::from_datetime(expires),
    ))
}

fn lost(lease: &Lease, op: &str) -> StoreError {
    StoreError::LockLost(format!(
        "{op} lease `{}`: no longer held by `{}` with token {}",
        lease.name(),
        lease.owner(),
        lease.token()
    ))
}

/// The three key columns of a held lease, as a WHERE clause.
fn held(sql: &mut Sql, lease: &Lease) -> String {
    let n = sql.bind(Bind::Text(lease.name().to_owned()));
    let o = sql.bind(Bind::Text(lease.owner().to_owned()));
    let t = sql.bind(token(lease));
    format!("name = {n} AND owner = {o} AND token = {t} AND expires_at > clock_timestamp()")
}

#[async_trait]
impl LockManager for PgLocks {
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        check_name("lock", name)?;
        check_name("lock owner", owner)?;
        let mut sql = Sql::new();
        let (n, o, ttl) = (
            sql.bind(Bind::Text(name.into())),
            sql.bind(Bind::Text(owner.into())),
            sql.bind(micros(ttl)),
        );
        sql.push(&format!(
            "INSERT INTO {TABLE} AS l (name, owner, token, expires_at) \
             VALUES ({n}, {o}, nextval('opstore_lease_token_seq'), clock_timestamp() + {ttl} * interval '1 microsecond') \
             ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, token = nextval('opstore_lease_token_seq'), expires_at = EXCLUDED.expires_at \
             WHERE l.expires_at <= clock_timestamp() \
             RETURNING name, owner, token, expires_at"
        ));
        let row = self
            .exec
            .fetch_optional(Ctx::new("try_acquire", TABLE).key(name), sql)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let mut sql = Sql::new();
        let ttl = sql.bind(micros(ttl));
        let w = held(&mut sql, lease);
        sql.push(&format!(
            "UPDATE {TABLE} SET expires_at = clock_timestamp() + {ttl} * interval '1 microsecond' WHERE {w} \
             RETURNING name, owner, token, expires_at"
        ));
        let row = self
            .exec
            .fetch_optional(Ctx::new("renew", TABLE).key(lease.name()), sql)
            .await?;
        row.as_ref()
            .map(decode)
            .transpose()?
            .ok_or_else(|| lost(lease, "renew"))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut sql = Sql::new();
        let w = held(&mut sql, lease);
        // Released rows are kept (expired) rather than deleted: a takeover then
        // draws its token under the row lock, after every earlier holder's, so
        // tokens never go backwards when an acquirer waited on a concurrent release.
        sql.push(&format!(
            "UPDATE {TABLE} SET expires_at = '-infinity' WHERE {w}"
        ));
        match self
            .exec
            .execute(Ctx::new("release", TABLE).key(lease.name()), sql)
            .await?
        {
            0 => Err(lost(lease, "release")),
            _ => Ok(()),
        }
    }

    async fn check(&self, lease: &Lease) -> Result<()> {
        let mut sql = Sql::new();
        let w = held(&mut sql, lease);
        sql.push(&format!("SELECT 1 FROM {TABLE} WHERE {w}"));
        match self
            .exec
            .fetch_optional(Ctx::new("check", TABLE).key(lease.name()), sql)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(lost(lease, "check")),
        }
    }

    async fn current(&self, name: &str) -> Result<Option<Lease>> {
        check_name("lock", name)?;
        let mut sql = Sql::new();
        let n = sql.bind(Bind::Text(name.into()));
        sql.push(&format!(
            "SELECT name, owner, token, expires_at FROM {TABLE} WHERE name = {n} AND expires_at > clock_timestamp()"
        ));
        let row = self
            .exec
            .fetch_optional(Ctx::new("current", TABLE).key(name), sql)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let mut sql = Sql::new();
        sql.push(&format!(
            "SELECT name, owner, token, expires_at FROM {TABLE} WHERE expires_at > clock_timestamp() ORDER BY name"
        ));
        let rows = self.exec.fetch_all(Ctx::new("list", TABLE), sql).await?;
        rows.iter().map(decode).collect()
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        check_name("lock", name)?;
        let mut sql = Sql::new();
        let n = sql.bind(Bind::Text(name.into()));
        sql.push(&format!(
            "UPDATE {TABLE} AS l SET expires_at = '-infinity' FROM {TABLE} AS before \
             WHERE l.name = {n} AND before.name = l.name RETURNING before.expires_at > clock_timestamp()"
        ));
        Ok(self
            .exec
            .execute(Ctx::new("force_release", TABLE).key(name), sql)
            .await?
            > 0)
    }
}
