//! `insert_many` as one streamed `COPY ... FROM STDIN`.

// The parent's imports and its `PgCollection`, whose methods this file adds.
use super::*;

/// Bytes of `COPY` data sent per message: small enough that the server starts
/// inserting while later documents are still being encoded.
const COPY_CHUNK_BYTES: usize = 64 * 1024;

impl PgCollection {
    /// `insert_many` as one streamed `COPY ... FROM STDIN` (one statement, so
    /// all or nothing): documents are validated and encoded chunk by chunk
    /// while the server inserts the chunks already sent. An invalid document
    /// aborts the copy, so nothing is written. Not used inside transactions (an
    /// aborted copy would fail the whole transaction) nor for TTL tables (whose
    /// expired rows with the same keys are deleted in the same statement).
    ///
    /// The whole copy is one call for the call timeout; when it runs out, the
    /// connection is closed mid-copy and the server discards the rows.
    pub(super) async fn copy_many(&self, pooled: &Pooled, docs: &[Value]) -> Result<u64> {
        let after = "its connection was closed, nothing was written";
        pooled
            .on_conn(self.ctx("insert_many"), after, async |conn| {
                self.copy_on(conn, docs).await
            })
            .await
    }

    async fn copy_on(&self, conn: &mut sqlx::PgConnection, docs: &[Value]) -> Result<u64> {
        let ctx = self.ctx("insert_many");
        let statement = format!("COPY {} (doc) FROM STDIN", self.table);
        let mut copy = conn
            .copy_in_raw(&statement)
            .await
            .map_err(|e| map(ctx, e))?;
        let mut buf = Vec::with_capacity(COPY_CHUNK_BYTES + 4096);
        for (i, doc) in docs.iter().enumerate() {
            if let Err(invalid) = self.encode_copy_row(doc, &mut buf) {
                // The server answers the abort with an error of its own; the
                // caller needs the validation error.
                let _ = copy.abort("invalid document").await;
                return Err(invalid);
            }
            if buf.len() >= COPY_CHUNK_BYTES || i + 1 == docs.len() {
                if let Err(e) = copy.send(buf.as_slice()).await {
                    let _ = copy.abort("send failed").await;
                    return Err(map(ctx, e));
                }
                buf.clear();
            }
        }
        copy.finish().await.map_err(|e| map(ctx, e))
    }

    /// Validates `doc` and appends it to `buf` as one line of `COPY` text:
    /// the JSON text written in place, with backslashes doubled (JSON text has
    /// no raw tabs or line breaks, they are escaped) and a line break.
    pub(super) fn encode_copy_row(&self, doc: &Value, buf: &mut Vec<u8>) -> Result<()> {
        self.schema.check_document(doc)?;
        let start = buf.len();
        if let Err(e) = serde_json::to_writer(&mut *buf, doc) {
            buf.truncate(start);
            return Err(StoreError::Validation(format!(
                "document for `{}` cannot be encoded: {e}",
                self.schema.name()
            )));
        }
        let len = buf.len() - start;
        if len > MAX_DOCUMENT_BYTES {
            buf.truncate(start);
            return Err(StoreError::Validation(format!(
                "document `{}` in `{}` is {len} bytes; at most {MAX_DOCUMENT_BYTES} allowed",
                self.key_of(doc),
                self.schema.name(),
            )));
        }
        if buf[start..].contains(&b'\\') {
            let text = buf.split_off(start);
            for b in text {
                if b == b'\\' {
                    buf.push(b'\\');
                }
                buf.push(b);
            }
        }
        buf.push(b'\n');
        Ok(())
    }
}
