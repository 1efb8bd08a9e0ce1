//! Event-processor checkpoints.

// The parent's imports and helpers.
use super::*;

/// Checkpoints on `opstore_checkpoints`.
#[derive(Debug, Clone)]
pub struct ScyllaCheckpoints {
    exec: Exec,
}

impl ScyllaCheckpoints {
    /// Checkpoints in the configured keyspace.
    pub fn new(exec: Exec) -> Self {
        ScyllaCheckpoints { exec }
    }

    fn table(&self) -> String {
        format!("{}.{CHECKPOINTS}", self.exec.config.keyspace)
    }
}

#[async_trait]
impl CheckpointStore for ScyllaCheckpoints {
    async fn save(&self, processor: &str, token: &ResumeToken) -> Result<()> {
        check_name("processor", processor)?;
        let stmt = self.exec.stmt(format!(
            "INSERT INTO {} (processor, \"token\", saved_at) VALUES (?, ?, ?)",
            self.table()
        ));
        let values = [
            text(processor),
            CqlValue::Blob(token.as_bytes().to_vec()),
            CqlValue::Timestamp(Timestamp::now().as_millis()),
        ];
        self.exec
            .run(Op::new("save", CHECKPOINTS).key(processor), &stmt, &values)
            .await
            .map(drop)
    }

    async fn load(&self, processor: &str) -> Result<Option<ResumeToken>> {
        check_name("processor", processor)?;
        let stmt = self.exec.stmt(format!(
            "SELECT \"token\" FROM {} WHERE processor = ?",
            self.table()
        ));
        let rows = self
            .exec
            .run(
                Op::new("load", CHECKPOINTS).key(processor),
                &stmt,
                &[text(processor)],
            )
            .await?;
        Ok(rows.first().and_then(|r| match r.get("token") {
            Some(CqlValue::Blob(b)) => Some(ResumeToken::from_bytes(b.clone())),
            _ => None,
        }))
    }

    async fn delete(&self, processor: &str) -> Result<bool> {
        check_name("processor", processor)?;
        let stmt = self.exec.lwt(format!(
            "DELETE FROM {} WHERE processor = ? IF EXISTS",
            self.table()
        ));
        Ok(self
            .exec
            .cas(
                Op::new("delete", CHECKPOINTS).key(processor),
                &stmt,
                &[text(processor)],
            )
            .await?
            .0)
    }
}
