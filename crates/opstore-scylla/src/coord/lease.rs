//! Leases with fencing tokens.
//!
//! Lease rows keep a `fence` counter that is never written with a TTL and only
//! grows by compare-and-set, so fencing tokens strictly increase per name even
//! after a lease expires. The holder cells (`owner`, `token`, `expires_at`) are
//! written `USING TTL`, so the server drops an abandoned lease.

// The parent's imports and helpers.
use super::*;

/// Current state of a lease row.
#[derive(Debug, Clone, PartialEq)]
struct LeaseRow {
    pub fence: Option<i64>,
    pub owner: Option<String>,
    pub token: Option<i64>,
    pub expires_at: Option<i64>,
}

impl LeaseRow {
    pub fn from_row(row: &Row) -> Self {
        let ts = |c: &str| match row.get(c) {
            Some(CqlValue::Timestamp(ms)) => Some(*ms),
            _ => None,
        };
        LeaseRow {
            fence: row.int("fence"),
            owner: row.text("owner").map(str::to_owned),
            token: row.int("token"),
            expires_at: ts("expires_at"),
        }
    }

    fn live(&self, now: Timestamp) -> bool {
        self.owner.is_some() && self.expires_at.is_some_and(|ms| ms > now.as_millis())
    }

    fn lease(&self, name: &str) -> Option<Lease> {
        Some(Lease::granted(
            name.to_owned(),
            self.owner.clone()?,
            u64::try_from(self.token?).ok()?,
            Timestamp::from_millis(self.expires_at?),
        ))
    }
}

fn lost(lease: &Lease) -> StoreError {
    StoreError::LockLost(format!(
        "lease `{}` (token {}) of `{}` expired or was taken over",
        lease.name(),
        lease.token(),
        lease.owner()
    ))
}

/// Leases on `opstore_leases`.
#[derive(Debug, Clone)]
pub struct ScyllaLocks {
    exec: Exec,
}

impl ScyllaLocks {
    /// Leases in the configured keyspace.
    pub fn new(exec: Exec) -> Self {
        ScyllaLocks { exec }
    }

    fn table(&self) -> String {
        format!("{}.{LEASES}", self.exec.config.keyspace)
    }

    async fn read(&self, name: &str) -> Result<Option<LeaseRow>> {
        let stmt = self.exec.serial_read(format!(
            "SELECT fence, owner, \"token\", expires_at FROM {} WHERE name = ?",
            self.table()
        ));
        let rows = self
            .exec
            .run(
                Op::new("read lease", LEASES).key(name),
                &stmt,
                &[text(name)],
            )
            .await?;
        Ok(rows.first().map(LeaseRow::from_row))
    }

    /// The acquisition statement: bumps the fence (no TTL) and writes the holder
    /// cells (with TTL) in one conditional batch on the lease's partition.
    fn acquire_cql(&self, had_owner: bool) -> (String, String) {
        let cond = if had_owner {
            "IF fence = ? AND owner = ? AND \"token\" = ?"
        } else {
            "IF fence = ? AND owner = null"
        };
        (
            format!(
                "UPDATE {} SET fence = ? WHERE name = ? {cond}",
                self.table()
            ),
            format!(
                "UPDATE {} USING TTL ? SET owner = ?, \"token\" = ?, expires_at = ? WHERE name = ?",
                self.table()
            ),
        )
    }

    /// `LockLost` unless `lease` is the live holder.
    pub async fn check_held(&self, lease: &Lease) -> Result<()> {
        match self.read(lease.name()).await? {
            Some(r)
                if r.live(Timestamp::now())
                    && r.owner.as_deref() == Some(lease.owner())
                    && r.token == i64::try_from(lease.token()).ok() =>
            {
                Ok(())
            }
            _ => Err(lost(lease)),
        }
    }
}

#[async_trait]
impl LockManager for ScyllaLocks {
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        check_name("lease", name)?;
        check_name("lease owner", owner)?;
        let secs = ttl_secs("try_acquire", ttl)?;
        let op = Op::new("try_acquire", LEASES).key(name);
        for _ in 0..ATTEMPTS {
            let now = Timestamp::now();
            let row = match self.read(name).await? {
                Some(r) if r.fence.is_some() => r,
                _ => {
                    let init = self.exec.lwt(format!(
                        "INSERT INTO {} (name, fence) VALUES (?, 0) IF NOT EXISTS",
                        self.table()
                    ));
                    self.exec.cas(op, &init, &[text(name)]).await?;
                    continue;
                }
            };
            if row.live(now) && row.owner.as_deref() != Some(owner) {
                return Ok(None);
            }
            let fence = row.fence.unwrap_or(0);
            let next = fence + 1;
            let expires = now.add(ttl);
            let had_owner = row.owner.is_some();
            let (cond_cql, hold_cql) = self.acquire_cql(had_owner);
            let mut cond_values = vec![CqlValue::BigInt(next), text(name), CqlValue::BigInt(fence)];
            if had_owner {
                cond_values.push(text(row.owner.as_deref().unwrap_or_default()));
                cond_values.push(row.token.map_or(CqlValue::Null, CqlValue::BigInt));
            }
            let statements = vec![
                (self.exec.lwt(cond_cql), cond_values),
                (
                    self.exec.lwt(hold_cql),
                    vec![
                        CqlValue::Int(secs),
                        text(owner),
                        CqlValue::BigInt(next),
                        CqlValue::Timestamp(expires.as_millis()),
                        text(name),
                    ],
                ),
            ];
            let rows = self
                .exec
                .batch(op, crate::value::BatchKind::Logged, &statements)
                .await?;
            if crate::value::applied(&rows).unwrap_or(false) {
                let token = u64::try_from(next).unwrap_or(0);
                return Ok(Some(Lease::granted(
                    name.to_owned(),
                    owner.to_owned(),
                    token,
                    Timestamp::from_millis(expires.as_millis()),
                )));
            }
        }
        Err(lwt_conflict(op, "lease contended by concurrent acquirers"))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let secs = ttl_secs("renew", ttl)?;
        let now = Timestamp::now();
        let expires = now.add(ttl);
        let stmt = self.exec.lwt(format!(
            "UPDATE {} USING TTL ? SET owner = ?, \"token\" = ?, expires_at = ? WHERE name = ? \
             IF owner = ? AND \"token\" = ? AND expires_at > ?",
            self.table()
        ));
        let token = CqlValue::BigInt(i64::try_from(lease.token()).unwrap_or(i64::MAX));
        let values = [
            CqlValue::Int(secs),
            text(lease.owner()),
            token.clone(),
            CqlValue::Timestamp(expires.as_millis()),
            text(lease.name()),
            text(lease.owner()),
            token,
            CqlValue::Timestamp(now.as_millis()),
        ];
        let (ok, _) = self
            .exec
            .cas(Op::new("renew", LEASES).key(lease.name()), &stmt, &values)
            .await?;
        if !ok {
            return Err(lost(lease));
        }
        Ok(Lease::granted(
            lease.name().to_owned(),
            lease.owner().to_owned(),
            lease.token(),
            Timestamp::from_millis(expires.as_millis()),
        ))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let stmt = self.exec.lwt(format!(
            "DELETE owner, \"token\", expires_at FROM {} WHERE name = ? IF owner = ? AND \"token\" = ? AND expires_at > ?",
            self.table()
        ));
        let values = [
            text(lease.name()),
            text(lease.owner()),
            CqlValue::BigInt(i64::try_from(lease.token()).unwrap_or(i64::MAX)),
            CqlValue::Timestamp(Timestamp::now().as_millis()),
        ];
        let (ok, _) = self
            .exec
            .cas(Op::new("release", LEASES).key(lease.name()), &stmt, &values)
            .await?;
        if ok { Ok(()) } else { Err(lost(lease)) }
    }

    async fn check(&self, lease: &Lease) -> Result<()> {
        self.check_held(lease).await
    }

    async fn current(&self, name: &str) -> Result<Option<Lease>> {
        check_name("lease", name)?;
        let now = Timestamp::now();
        Ok(self
            .read(name)
            .await?
            .filter(|r| r.live(now))
            .and_then(|r| r.lease(name)))
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let stmt = self.exec.stmt(format!(
            "SELECT name, fence, owner, \"token\", expires_at FROM {}",
            self.table()
        ));
        let now = Timestamp::now();
        let mut out = Vec::new();
        let mut state = None;
        loop {
            let page = self
                .exec
                .page(Op::new("list leases", LEASES), &stmt, &[], state)
                .await?;
            for row in &page.rows {
                let r = LeaseRow::from_row(row);
                if let (true, Some(name)) = (r.live(now), row.text("name")) {
                    out.extend(r.lease(name));
                }
            }
            state = page.paging_state;
            if state.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        check_name("lease", name)?;
        let Some(row) = self.read(name).await?.filter(|r| r.live(Timestamp::now())) else {
            return Ok(false);
        };
        let stmt = self.exec.lwt(format!(
            "DELETE owner, \"token\", expires_at FROM {} WHERE name = ? IF owner = ? AND \"token\" = ?",
            self.table()
        ));
        let values = [
            text(name),
            text(row.owner.as_deref().unwrap_or_default()),
            row.token.map_or(CqlValue::Null, CqlValue::BigInt),
        ];
        Ok(self
            .exec
            .cas(Op::new("force_release", LEASES).key(name), &stmt, &values)
            .await?
            .0)
    }
}
