//! The change feed on MongoDB change streams.
//!
//! Tokens are a version byte, the expiry-clock time the event was read (8 bytes,
//! microseconds, big-endian; used by the optional retention policy) and the
//! server's resume token document as BSON. Update
//! events carry the current document (`fullDocument: updateLookup`). A filter
//! becomes a `$match` stage on `fullDocument`, so only matching events leave the
//! server; filtered watches receive no deletes (they carry no document). A
//! token whose history the server no longer has (codes 136, 260, 280, 286) is
//! `ResumeTokenExpired`, from `watch` or as the stream's first item.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken as DriverToken};
use mongodb::options::FullDocumentType;
use opstore_domain::{
    ChangeEvent, ChangeFeed, ChangeOp, ChangeStream, Result, ResumeToken, StartAt, StoreError,
    Timestamp, WatchRequest,
};

use crate::ctx::Ctx;
use crate::error;
use crate::translate;

/// Change streams of one database.
pub(crate) struct MongoFeed {
    ctx: Arc<Ctx>,
}

impl MongoFeed {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        MongoFeed { ctx }
    }

    /// The operation time `StartAt::Beginning` starts from: the oldest oplog
    /// entry, limited by the configured history window.
    async fn beginning(&self) -> mongodb::bson::Timestamp {
        let oplog = self
            .ctx
            .client
            .database("local")
            .collection::<Document>("oplog.rs");
        let oldest = oplog
            .find_one(doc! {})
            .sort(doc! { "$natural": 1 })
            .projection(doc! { "ts": 1 })
            .await
            .ok()
            .flatten()
            .and_then(|d| d.get_timestamp("ts").ok())
            .unwrap_or(mongodb::bson::Timestamp {
                time: 1,
                increment: 0,
            });
        match self.ctx.config.feed_retention {
            None => oldest,
            Some(window) => {
                let since = Timestamp::now().sub(window).as_millis() / 1000;
                let since = u32::try_from(since.max(1)).unwrap_or(u32::MAX);
                if since > oldest.time {
                    mongodb::bson::Timestamp {
                        time: since,
                        increment: 0,
                    }
                } else {
                    oldest
                }
            }
        }
    }
}

/// Version byte of the token layout.
const TOKEN_V1: u8 = 1;

/// Encodes a driver token and the time it was read as opaque bytes.
fn encode_token(t: &DriverToken, read_at: Timestamp) -> Result<ResumeToken> {
    let bad = |e: String| StoreError::Backend {
        message: format!("cannot encode a resume token: {e}"),
        source: None,
    };
    match mongodb::bson::to_bson(t).map_err(|e| bad(e.to_string()))? {
        Bson::Document(d) => {
            let mut bytes = vec![TOKEN_V1];
            bytes.extend_from_slice(&read_at.as_micros().to_be_bytes());
            d.to_writer(&mut bytes).map_err(|e| bad(e.to_string()))?;
            Ok(ResumeToken::from_bytes(bytes))
        }
        other => Err(bad(format!(
            "unexpected token type {:?}",
            other.element_type()
        ))),
    }
}

/// Decodes bytes made by [`encode_token`].
pub(crate) fn decode_token(t: &ResumeToken) -> Result<(DriverToken, Timestamp)> {
    let bad = || {
        StoreError::Validation(format!(
            "resume token {t} is not a MongoDB change-stream token"
        ))
    };
    let bytes = t.as_bytes();
    if bytes.len() < 9 || bytes[0] != TOKEN_V1 {
        return Err(bad());
    }
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&bytes[1..9]);
    let d = Document::from_reader(&bytes[9..]).map_err(|_| bad())?;
    let token = mongodb::bson::from_bson(Bson::Document(d)).map_err(|_| bad())?;
    Ok((token, Timestamp::from_micros(i64::from_be_bytes(micros))))
}

fn to_event(
    collection: &str,
    e: ChangeStreamEvent<Document>,
    read_at: Timestamp,
) -> Option<Result<ChangeEvent>> {
    let op = match e.operation_type {
        OperationType::Insert => ChangeOp::Insert,
        OperationType::Update => ChangeOp::Update,
        OperationType::Replace => ChangeOp::Replace,
        OperationType::Delete => ChangeOp::Delete,
        OperationType::Invalidate
        | OperationType::Drop
        | OperationType::Rename
        | OperationType::DropDatabase => {
            return Some(Err(StoreError::Backend {
                message: format!(
                    "change stream on `{collection}` ended: the collection was dropped or renamed"
                ),
                source: None,
            }));
        }
        _ => return None,
    };
    // Row locks taken by `get_for_update` are not changes of the entity.
    if let Some(u) = &e.update_description {
        let lock_only = u.removed_fields.is_empty()
            && !u.updated_fields.is_empty()
            && u.updated_fields.keys().all(|k| k == translate::LOCK_FIELD);
        if lock_only {
            return None;
        }
    }
    let key = match e.document_key.as_ref().and_then(|k| k.get("_id")) {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let token = match encode_token(&e.id, read_at) {
        Ok(t) => t,
        Err(err) => return Some(Err(err)),
    };
    let at = match (e.wall_time, e.cluster_time) {
        (Some(w), _) => Timestamp::from_millis(w.timestamp_millis()),
        (None, Some(c)) => Timestamp::from_millis(i64::from(c.time) * 1000),
        (None, None) => Timestamp::now(),
    };
    let document = if op == ChangeOp::Delete {
        None
    } else {
        e.full_document.map(translate::from_stored)
    };
    Some(Ok(ChangeEvent {
        collection: collection.to_owned(),
        op,
        key,
        document,
        token,
        at,
    }))
}

#[async_trait]
impl ChangeFeed for MongoFeed {
    async fn watch(&self, request: WatchRequest) -> Result<ChangeStream> {
        request.check_watchable()?;
        let schema = request.schema;
        let name = schema.name().to_owned();
        if !self.ctx.replica_set {
            return Err(StoreError::Unsupported(format!(
                "change feed on `{name}`: change streams need a MongoDB replica set or sharded cluster; \
                 this server is standalone (start mongod with --replSet and run rs.initiate())"
            )));
        }
        let mut pipeline = Vec::new();
        if let Some(filter) = &request.filter {
            let checked = schema.check_filter(filter)?;
            let matched = translate::filter(schema, &checked, "fullDocument.");
            let ops = doc! { "operationType": { "$in": ["insert", "update", "replace"] } };
            pipeline.push(doc! { "$match": translate::and(ops, matched) });
        }
        let coll = self.ctx.db.collection::<Document>(&name);
        let mut watch = coll
            .watch()
            .pipeline(pipeline)
            .full_document(FullDocumentType::UpdateLookup);
        match &request.start {
            StartAt::Now => {}
            StartAt::Beginning => watch = watch.start_at_operation_time(self.beginning().await),
            StartAt::After(token) => {
                let (token, read_at) = decode_token(token)?;
                if let Some(retention) = self.ctx.config.feed_retention {
                    let age = self.ctx.now().since(read_at);
                    if age > retention {
                        return Err(StoreError::ResumeTokenExpired(format!(
                            "watch `{name}`: the token is {}s old; the feed retains {}s",
                            age.as_secs(),
                            retention.as_secs()
                        )));
                    }
                }
                watch = watch.resume_after(token);
            }
        }
        let what = format!("watch `{name}`");
        let stream = watch.await.map_err(|e| error::map(&what, e))?;
        let ctx = Arc::clone(&self.ctx);
        let stream = stream.filter_map(move |item| {
            let out = match item {
                Ok(e) => to_event(&name, e, ctx.now()),
                Err(e) => Some(Err(error::map(&format!("watch `{name}`"), e))),
            };
            futures::future::ready(out)
        });
        Ok(stream.boxed())
    }
}
