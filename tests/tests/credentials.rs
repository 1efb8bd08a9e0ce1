//! Passwords set in every URL and configuration form never appear in `Debug`,
//! `Display`, error messages or tracing output, including the errors of
//! connections refused by a closed loopback port.

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opstore_app::{StoreConfig, StoreUrl};
use opstore_domain::StoreError;
use opstore_mongo::{MongoConfig, MongoStore};
use opstore_postgres::{PgConfig, PgStore};
use opstore_scylla::{ScyllaConfig, ScyllaStore};

/// Every password below contains this marker, so one search finds any of them,
/// percent-encoded or decoded.
const MARK: &str = "Zq9x";

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Tracing output of everything run inside [`captured`].
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// Runs `work` on a current-thread runtime with a TRACE subscriber writing to
/// the returned buffer, so driver tasks it spawns are captured too.
fn captured<F: std::future::Future<Output = Vec<String>>>(work: F) -> (Vec<String>, String) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let shown = tracing::subscriber::with_default(subscriber, || {
        tracing::info!("capture started");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(work)
    });
    (shown, buffer.text())
}

fn error_texts(e: &StoreError) -> Vec<String> {
    let mut texts = vec![e.to_string(), format!("{e:?}")];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        texts.push(s.to_string());
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    texts
}

fn assert_clean(what: &str, texts: &[String]) {
    for t in texts {
        assert!(!t.contains(MARK), "{what} shows a password: {t}");
    }
}

#[test]
fn store_config_forms_hide_passwords() {
    let urls = [
        format!("postgres://app:{MARK}pw@db:5432/ops?sslmode=require"),
        format!("postgresql://app:{MARK}%40pw@db/ops"),
        format!("postgres://app@db/ops?password={MARK}q&sslpassword={MARK}k"),
        format!("mongodb://app:{MARK}pw@db1:27017,db2:27017/ops?replicaSet=rs"),
        format!("mongodb+srv://app:{MARK}pw@cluster.example/ops"),
        format!("scylla://app:{MARK}pw@db:9042/ops"),
        format!("scylla://app:{MARK}p@w@db:9042/ops"),
    ];
    let (shown, trace) = captured(async {
        let mut shown = Vec::new();
        for url in &urls {
            let parsed = StoreUrl::parse(url).expect("parse");
            shown.push(format!("{parsed:?}"));
            shown.push(parsed.to_string());
            shown.push(parsed.redacted());
            let config = StoreConfig::from_url(url).expect("from_url");
            shown.push(format!("{config:?}"));
            let from_env = StoreConfig::from_lookup(|k| (k == "OPSTORE_URL").then(|| url.clone()))
                .expect("from_lookup");
            shown.push(format!("{from_env:?}"));
            tracing::info!(config = ?from_env, url = %from_env.url, "configured");
        }
        // Malformed URLs: the errors repeat the URL redacted.
        for bad in [
            format!("postgres://app:{MARK}pw@/ops"),
            format!("redis://app:{MARK}pw@h"),
            format!("app:{MARK}pw@h"),
        ] {
            let e = StoreConfig::from_url(&bad).expect_err("malformed");
            shown.extend(error_texts(&e));
        }
        shown
    });
    assert!(
        trace.contains("configured"),
        "the subscriber captured nothing"
    );
    assert_clean("StoreConfig", &shown);
    assert_clean("tracing", &[trace]);
}

#[test]
fn adapter_configs_hide_passwords() {
    let (shown, trace) = captured(async {
        let mut shown = Vec::new();
        for url in [
            format!("postgres://app:{MARK}pw@db/ops?password={MARK}q"),
            format!("postgres://app:{MARK}%2Fpw@db/ops"),
        ] {
            let pg = PgConfig::from_url(url);
            shown.push(format!("{pg:?}"));
            shown.push(pg.redacted_url());
        }
        let mongo = MongoConfig::new(
            format!("mongodb://app:{MARK}pw@db/?authSource=admin"),
            "ops",
        );
        shown.push(format!("{mongo:?}"));
        shown.push(mongo.redacted_url());
        let scylla = ScyllaConfig::from_url(&format!("scylla://app:{MARK}pw@db:9042/ops"))
            .expect("scylla url");
        shown.push(format!("{scylla:?}"));
        shown.push(scylla.describe());
        let mut built = ScyllaConfig::new(&["db"], "ops");
        built.credentials = Some(opstore_scylla::config::Credentials {
            username: "app".into(),
            password: opstore_scylla::config::Secret::new(format!("{MARK}pw")),
        });
        shown.push(format!("{built:?}"));
        for bad in [
            format!("scylla://app:{MARK}pw@db:9042/"),
            format!("scylla://app:{MARK}pw@db:9042/ops?bogus=1"),
            format!("scylla://app:{MARK}pw@/ops"),
        ] {
            let e = ScyllaConfig::from_url(&bad).expect_err("malformed");
            shown.extend(error_texts(&e));
        }
        tracing::debug!(?scylla, ?mongo, "configs");
        shown
    });
    assert!(trace.contains("configs"), "the subscriber captured nothing");
    assert_clean("adapter config", &shown);
    assert_clean("tracing", &[trace]);
}

#[test]
fn refused_connections_hide_passwords() {
    let port = closed_port();
    let (shown, trace) = captured(async move {
        let mut shown = Vec::new();
        let fast = Duration::from_millis(800);

        let mut pg = PgConfig::from_url(format!(
            "postgres://app:{MARK}pw@127.0.0.1:{port}/ops?password={MARK}q"
        ));
        pg.acquire_timeout = fast;
        let e = PgStore::connect(pg).await.expect_err("closed port");
        shown.extend(error_texts(&e));

        let mut mongo = MongoConfig::new(
            format!("mongodb://app:{MARK}pw@127.0.0.1:{port}/?directConnection=true"),
            "ops",
        );
        mongo.connect_timeout = fast;
        mongo.server_selection_timeout = fast;
        let e = MongoStore::connect(mongo).await.expect_err("closed port");
        shown.extend(error_texts(&e));

        let mut scylla =
            ScyllaConfig::from_url(&format!("scylla://app:{MARK}pw@127.0.0.1:{port}/ops"))
                .expect("scylla url");
        scylla.connect_timeout = fast;
        let e = ScyllaStore::connect(scylla).await.expect_err("closed port");
        shown.extend(error_texts(&e));

        for url in [
            format!("postgres://app:{MARK}pw@127.0.0.1:{port}/ops"),
            format!("mongodb://app:{MARK}pw@127.0.0.1:{port}/ops?directConnection=true"),
            format!("scylla://app:{MARK}pw@127.0.0.1:{port}/ops"),
        ] {
            let mut config = StoreConfig::from_url(&url).expect("url");
            config.connect_timeout = fast;
            config.operation_timeout = fast;
            let e = opstore_app::wiring::connect(&config)
                .await
                .expect_err("closed port");
            assert!(e.is_connection() || e.is_timeout(), "{}: {e}", config.url);
            shown.extend(error_texts(&e));
            tracing::error!(error = %e, "connect failed");
        }
        shown
    });
    assert!(!shown.is_empty());
    assert!(
        trace.contains("connect failed"),
        "the subscriber captured nothing"
    );
    assert_clean("connection error", &shown);
    assert_clean("tracing", &[trace]);
}
