//! `opstore watch`: tails a collection's change feed as JSON lines, each with
//! the resume token that continues right after it.

use std::io::Write;

use futures::StreamExt;
use opstore_app::DataStore;
use opstore_domain::entities::all_schemas;
use opstore_domain::{ChangeEvent, ChangeOp, Filter, ResumeToken, Schema, StartAt, WatchRequest};
use serde::Serialize;

use crate::cli::WatchArgs;
use crate::error::CliError;
use crate::output::{OutputFormat, write_json_line};

/// A validated watch request.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The collection.
    pub schema: &'static Schema,
    /// Where to start.
    pub start: StartAt,
    /// Only changes whose document matches.
    pub filter: Option<Filter>,
    /// Stop after this many changes.
    pub limit: Option<u64>,
}

impl WatchOptions {
    /// Checks the arguments: a known collection, a hex token, a filter in the
    /// serde form of [`Filter`].
    pub fn from_args(args: &WatchArgs) -> Result<Self, CliError> {
        let schema = resolve_collection(&args.collection)?;
        let start = match (&args.from_token, args.from_beginning) {
            (Some(token), _) => StartAt::After(parse_token(token)?),
            (None, true) => StartAt::Beginning,
            (None, false) => StartAt::Now,
        };
        let filter = args.filter.as_deref().map(parse_filter).transpose()?;
        Ok(WatchOptions {
            schema,
            start,
            filter,
            limit: args.limit,
        })
    }
}

/// The schema of a domain collection, by name.
pub fn resolve_collection(name: &str) -> Result<&'static Schema, CliError> {
    let schemas = all_schemas();
    if let Some(schema) = schemas.iter().find(|s| s.name() == name) {
        return Ok(schema);
    }
    let known: Vec<&str> = schemas.iter().map(|s| s.name()).collect();
    Err(CliError::usage(format!(
        "unknown collection `{name}`; known collections: {}",
        known.join(", ")
    )))
}

/// A resume token as `watch` prints it (hex).
pub fn parse_token(text: &str) -> Result<ResumeToken, CliError> {
    text.trim()
        .parse()
        .map_err(|e| CliError::store("--from-token", e))
}

/// A filter in the serde form of [`Filter`], e.g. `{"eq":["key","value"]}`.
pub fn parse_filter(text: &str) -> Result<Filter, CliError> {
    serde_json::from_str(text).map_err(|e| {
        CliError::usage(format!(
            "--filter is not a filter ({e}); example: {{\"eq\":[\"healthevent.nodename\",\"node-1\"]}}"
        ))
    })
}

/// One printed change.
#[derive(Debug, Clone, Serialize)]
pub struct WatchLine<'a> {
    /// Collection.
    pub collection: &'a str,
    /// Kind of change.
    pub op: ChangeOp,
    /// Document key.
    pub key: &'a str,
    /// Resume token (hex): `--from-token` continues right after this change.
    pub token: String,
    /// Commit time.
    pub at: String,
    /// The document after the change (absent for deletes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<&'a serde_json::Value>,
}

impl<'a> WatchLine<'a> {
    /// The printed form of `event`.
    pub fn of(event: &'a ChangeEvent) -> Self {
        WatchLine {
            collection: &event.collection,
            op: event.op,
            key: &event.key,
            token: event.token.to_string(),
            at: event.at.to_string(),
            document: event.document.as_ref(),
        }
    }
}

/// Tails the feed, writing one line per change and flushing after each, until
/// `limit` changes were printed or the feed fails. `ready` is told once the
/// feed is open, so a caller knows later changes will be seen.
pub async fn watch(
    store: &DataStore,
    options: &WatchOptions,
    format: OutputFormat,
    out: &mut dyn Write,
    ready: &mut (dyn FnMut(&str) + Send),
) -> Result<u64, CliError> {
    let name = options.schema.name();
    if options.limit == Some(0) {
        return Ok(0);
    }
    let mut stream = store
        .change_feed()
        .watch(WatchRequest {
            schema: options.schema,
            start: options.start.clone(),
            filter: options.filter.clone(),
        })
        .await
        .map_err(|e| CliError::store(&format!("watching `{name}`"), e))?;
    let from = match &options.start {
        StartAt::Now => "now".to_owned(),
        StartAt::Beginning => "the beginning".to_owned(),
        StartAt::After(token) => format!("after token {token}"),
    };
    ready(&format!("watching `{name}` from {from}"));
    let mut printed = 0u64;
    while let Some(item) = stream.next().await {
        let event = item.map_err(|e| CliError::store(&format!("watching `{name}`"), e))?;
        let line = WatchLine::of(&event);
        match format {
            OutputFormat::Json => write_json_line(out, &line)?,
            OutputFormat::Table => writeln!(
                out,
                "{}  {:<7}  {}  token={}",
                line.at,
                format!("{:?}", line.op).to_lowercase(),
                line.key,
                line.token
            )?,
        }
        out.flush()?;
        printed += 1;
        if options.limit.is_some_and(|limit| printed >= limit) {
            break;
        }
    }
    Ok(printed)
}
