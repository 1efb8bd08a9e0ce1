//! A downstream service in twenty lines: open the configured store, record an
//! error, list a page of errors.
//!
//! `cargo run -p opstore --example list_errors` (set `OPSTORE_URL` for a server).

use opstore::prelude::*;

#[tokio::main]
async fn main() -> Result<()> {
    // OPSTORE_URL=postgres://app:secret@db/ops, or memory:// when unset.
    let store = DataStore::open(&StoreConfig::from_env()?).await?;
    let errors = store.repository::<ErrorRecord>()?;
    let page = errors
        .find_page(
            &Query::filter(Filter::eq("namespace", "prod"))
                .sort_desc("last_seen")
                .limit(20),
        )
        .await?;
    println!(
        "{} errors in prod, showing {}",
        page.total,
        page.items.len()
    );
    Ok(())
}
