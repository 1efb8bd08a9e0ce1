//! The change feed on MongoDB change streams.
//!
//! Tokens are the server's resume token document, encoded as BSON bytes. Update
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

use crate::config::FeedHistory;
use crate::error;
use crate::store::Ctx;
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
        match self.ctx.config.feed_history {
            FeedHistory::Oplog => oldest,
            FeedHistory::Window(window) => {
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

/// Encodes a driver token as opaque bytes.
fn encode_token(t: &DriverToken) -> Result<ResumeToken> {
    let bad = |e: String| StoreError::Backend {
        message: format!("cannot encode a resume token: {e}"),
        source: None,
    };
    match mongodb::bson::to_bson(t).map_err(|e| bad(e.to_string()))? {
        Bson::Document(d) => {
            let mut bytes = Vec::new();
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
pub(crate) fn decode_token(t: &ResumeToken) -> Result<DriverToken> {
    let bad = || {
        StoreError::Validation(format!(
            "resume token {t} is not a MongoDB change-stream token"
        ))
    };
    let d = Document::from_reader(t.as_bytes()).map_err(|_| bad())?;
    mongodb::bson::from_bson(Bson::Document(d)).map_err(|_| bad())
}

fn to_event(collection: &str, e: ChangeStreamEvent<Document>) -> Option<Result<ChangeEvent>> {
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
    let key = match e.document_key.as_ref().and_then(|k| k.get("_id")) {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let token = match encode_token(&e.id) {
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
            StartAt::After(token) => watch = watch.resume_after(decode_token(token)?),
        }
        let what = format!("watch `{name}`");
        let stream = watch.await.map_err(|e| error::map(&what, e))?;
        let stream = stream.filter_map(move |item| {
            let out = match item {
                Ok(e) => to_event(&name, e),
                Err(e) => Some(Err(error::map(&format!("watch `{name}`"), e))),
            };
            futures::future::ready(out)
        });
        Ok(stream.boxed())
    }
}
