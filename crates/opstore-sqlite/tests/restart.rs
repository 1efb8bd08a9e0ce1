//! Durability across a crash: a child process writes to a database file and
//! reports each write as it returns; the test kills it (SIGKILL) partway,
//! reopens the file and finds every reported write, in the documents and in
//! the change feed, and the file open for writing again.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use opstore_domain::{Entity, Repository, StartAt, Store, StoreExt, WatchRequest};
use opstore_sqlite::{SqliteConfig, SqliteStore};
use opstore_testkit::fixtures::{self, Item, item};

/// Set in the child: the database file it writes to.
const CHILD_FILE: &str = "OPSTORE_SQLITE_RESTART_CHILD_FILE";
/// Writes the parent waits for before it kills the child.
const REPORTED: usize = 40;

async fn open(file: &str) -> SqliteStore {
    let store = SqliteStore::connect(SqliteConfig::from_url(format!("sqlite://{file}")))
        .await
        .expect("open the database file");
    store
        .migrate(&fixtures::schemas())
        .await
        .expect("migrate fixtures");
    store
}

/// The child: inserts items one after another for ever, printing each key once
/// its insert has returned (committed).
async fn write_until_killed(file: &str) {
    let store = open(file).await;
    let items = store.repository::<Item>().expect("items");
    for i in 0.. {
        let key = format!("k{i:06}");
        items.insert(&item(&key).build()).await.expect("insert");
        println!("committed {key}");
    }
}

#[test]
fn committed_writes_survive_a_killed_process() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(file) = std::env::var(CHILD_FILE) {
        runtime.block_on(write_until_killed(&file));
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("opstore-sqlite");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let file = dir
        .join(format!("restart-{}.db", uuid::Uuid::new_v4().simple()))
        .display()
        .to_string();
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "committed_writes_survive_a_killed_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_FILE, &file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("the writer's stdout");
    let mut reported = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the writer's output");
        // libtest may print its own text before the first line on the same line.
        if let Some((_, key)) = line.rsplit_once("committed ") {
            reported.push(key.to_owned());
            if reported.len() == REPORTED {
                break;
            }
        }
    }
    // `kill` is SIGKILL on Unix: no destructor, no checkpoint, no clean close.
    child.kill().expect("kill the writer");
    child.wait().expect("reap the writer");
    assert_eq!(reported.len(), REPORTED, "the writer stopped early");

    runtime.block_on(async {
        let store = open(&file).await;
        let items = store.repository::<Item>().expect("items");
        for key in &reported {
            assert!(
                items.get(key).await.expect("get").is_some(),
                "committed item {key} was lost"
            );
        }
        let mut feed = store
            .change_feed()
            .watch(WatchRequest {
                schema: Item::schema(),
                start: StartAt::Beginning,
                filter: None,
            })
            .await
            .expect("watch");
        for key in &reported {
            let event = tokio::time::timeout(Duration::from_secs(10), feed.next())
                .await
                .expect("the feed delivers the history")
                .expect("the feed stays open")
                .expect("a change event");
            assert_eq!(&event.key, key, "the feed replays commits in order");
        }
        items
            .insert(&item("after-restart").build())
            .await
            .expect("the file accepts writes after the crash");
        store.close().await;
    });
}
