//! `opstore deadletters list|replay`: events processors gave up on.

use std::io::Write;

use opstore_app::DataStore;
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{Filter, Query, Repository, Timestamp, Update, Value};
use serde::Serialize;

use crate::cli::DeadLettersCommand;
use crate::commands::watch::resolve_collection;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, truncate, write_json};

fn repository(
    store: &DataStore,
) -> Result<opstore_domain::CollectionRepository<DeadLetter>, CliError> {
    store
        .repository::<DeadLetter>()
        .map_err(|e| CliError::store("opening `dead_letters`", e))
}

fn selection(processor: Option<&str>, include_replayed: bool) -> Filter {
    let mut filter = Filter::All;
    if let Some(p) = processor {
        filter = filter.and(Filter::eq("processor", p));
    }
    if !include_replayed {
        filter = filter.and(Filter::missing("replayed_at"));
    }
    filter
}

/// Dead letters oldest first: those of `processor` when given, not yet
/// replayed unless `include_replayed`, at most `limit` (0 = all).
pub async fn list(
    store: &DataStore,
    processor: Option<&str>,
    include_replayed: bool,
    limit: u64,
) -> Result<Vec<DeadLetter>, CliError> {
    let query = Query::filter(selection(processor, include_replayed))
        .sort_asc("created_at")
        .limit(limit);
    repository(store)?
        .find(&query)
        .await
        .map_err(|e| CliError::store("listing `dead_letters`", e))
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelection {
    /// These ids, whether replayed before or not.
    Ids(Vec<String>),
    /// Every not yet replayed dead letter, of one processor when given.
    Pending {
        /// Processor name.
        processor: Option<String>,
    },
}

/// What replaying one dead letter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayAction {
    /// The source document was written back unchanged: a new change event.
    Rewritten,
    /// The source document was gone; the version in the dead letter was inserted.
    Reinserted,
    /// Neither the source document nor a copy exists (a deletion); nothing to deliver.
    SourceMissing,
}

/// One replayed dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// Dead letter id.
    pub id: String,
    /// Source collection.
    pub collection: String,
    /// Source document key.
    pub key: String,
    /// What was done.
    pub action: ReplayAction,
}

/// Delivers dead letters again through the change feed: each source document
/// is written back (or re-inserted from the dead letter's copy), so the
/// processor watching that collection handles it once more. Replayed dead
/// letters get `replayed_at`; they are kept for the record.
pub async fn replay(
    store: &DataStore,
    selection: &ReplaySelection,
) -> Result<Vec<Replayed>, CliError> {
    let repo = repository(store)?;
    let letters = match selection {
        ReplaySelection::Ids(ids) => {
            let mut letters = Vec::with_capacity(ids.len());
            for id in ids {
                let letter = repo
                    .get(id)
                    .await
                    .map_err(|e| CliError::store(&format!("reading dead letter `{id}`"), e))?
                    .ok_or_else(|| CliError::runtime(format!("no dead letter with id `{id}`")))?;
                letters.push(letter);
            }
            letters
        }
        ReplaySelection::Pending { processor } => {
            list(store, processor.as_deref(), false, 0).await?
        }
    };
    let mut replayed = Vec::with_capacity(letters.len());
    for letter in letters {
        let action = redeliver(store, &letter).await?;
        let now = serde_json::to_value(Timestamp::now())
            .map_err(|e| CliError::runtime(format!("encoding a timestamp: {e}")))?;
        repo.update_one(&letter.id, &Update::new().set("replayed_at", now))
            .await
            .map_err(|e| {
                CliError::store(&format!("marking dead letter `{}` replayed", letter.id), e)
            })?;
        replayed.push(Replayed {
            id: letter.id,
            collection: letter.collection,
            key: letter.key,
            action,
        });
    }
    Ok(replayed)
}

async fn redeliver(store: &DataStore, letter: &DeadLetter) -> Result<ReplayAction, CliError> {
    let schema = resolve_collection(&letter.collection)?;
    let what = format!("replaying `{}` key `{}`", letter.collection, letter.key);
    let collection = store
        .store()
        .collection(schema)
        .map_err(|e| CliError::store(&what, e))?;
    if let Some(current) = collection
        .get(&letter.key)
        .await
        .map_err(|e| CliError::store(&what, e))?
    {
        collection
            .replace(current)
            .await
            .map_err(|e| CliError::store(&what, e))?;
        return Ok(ReplayAction::Rewritten);
    }
    match letter.event.get("document") {
        Some(doc @ Value::Object(_)) => {
            collection
                .insert(doc.clone())
                .await
                .map_err(|e| CliError::store(&what, e))?;
            Ok(ReplayAction::Reinserted)
        }
        _ => Ok(ReplayAction::SourceMissing),
    }
}

/// Runs a `deadletters` subcommand and prints its result.
pub async fn run(
    store: &DataStore,
    command: &DeadLettersCommand,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        DeadLettersCommand::List {
            processor,
            all,
            limit,
        } => {
            let letters = list(store, processor.as_deref(), *all, *limit).await?;
            if format == OutputFormat::Json {
                return write_json(out, &letters);
            }
            if letters.is_empty() {
                writeln!(out, "no dead letters")?;
                return Ok(());
            }
            let mut table = Table::new([
                "id",
                "processor",
                "collection",
                "key",
                "attempts",
                "created at",
                "replayed at",
                "error",
            ]);
            for l in &letters {
                table.row([
                    l.id.clone(),
                    l.processor.clone(),
                    l.collection.clone(),
                    l.key.clone(),
                    l.attempts.to_string(),
                    l.created_at.to_string(),
                    l.replayed_at.map(|t| t.to_string()).unwrap_or_default(),
                    truncate(&l.error, 60),
                ]);
            }
            table.write(out)
        }
        DeadLettersCommand::Replay {
            ids,
            processor,
            all: _,
        } => {
            let selection = if ids.is_empty() {
                ReplaySelection::Pending {
                    processor: processor.clone(),
                }
            } else {
                ReplaySelection::Ids(ids.clone())
            };
            let replayed = replay(store, &selection).await?;
            if format == OutputFormat::Json {
                return write_json(out, &replayed);
            }
            if replayed.is_empty() {
                writeln!(out, "nothing to replay")?;
                return Ok(());
            }
            let mut table = Table::new(["id", "collection", "key", "action"]);
            for r in &replayed {
                let action = match r.action {
                    ReplayAction::Rewritten => "rewritten",
                    ReplayAction::Reinserted => "reinserted",
                    ReplayAction::SourceMissing => "source missing",
                };
                table.row([
                    r.id.clone(),
                    r.collection.clone(),
                    r.key.clone(),
                    action.to_owned(),
                ]);
            }
            table.write(out)
        }
    }
}
