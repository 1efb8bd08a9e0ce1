//! The `opstore` command: operator commands against any store URL and the
//! remediation pipeline demo.
//!
//! The binary is a thin shell over this library: [`run`] executes a parsed
//! [`Cli`], and each command's logic is a public function taking an open
//! [`opstore_app::DataStore`], so programs and tests can call it in
//! process.

pub mod cli;
pub mod commands;
pub mod error;
pub mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind as ClapErrorKind;
use opstore_app::{DataStore, StoreConfig, wiring};

pub use cli::{Cli, Command};
pub use error::CliError;
pub use output::OutputFormat;

/// Parses the process arguments, runs the command and turns the outcome into
/// an exit code: 0 on success, 2 for usage and validation errors, 1 for
/// runtime errors. Errors are printed to stderr as one line.
pub fn main_entry() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    // The demo provokes failures on purpose; their warnings would bury the summary.
    init_tracing(if matches!(cli.command, Command::Demo(_)) {
        "error"
    } else {
        "warn"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(&CliError::runtime(format!("starting the runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli) => result,
            _ = tokio::signal::ctrl_c() => Err(CliError::runtime("interrupted")),
        }
    });
    // Background tasks (processors, lease keepers) end with the runtime.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Runs one parsed command, writing results to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let mut stdout = std::io::stdout();
    let format = cli.output;
    match cli.command {
        Command::Migrate => {
            let store = connect(&cli.url).await?;
            let report = commands::migrate::migrate(&store).await?;
            commands::migrate::print(&report, format, &mut stdout)?;
            store.close().await;
        }
        Command::Health => {
            let config = config(&cli.url)?;
            let report = commands::health::health(&config).await?;
            commands::health::print(&report, format, &mut stdout)?;
        }
        Command::Watch(args) => {
            let options = commands::watch::WatchOptions::from_args(&args)?;
            let store = open(&cli.url).await?;
            let mut stderr = std::io::stderr();
            commands::watch::watch(&store, &options, format, &mut stdout, &mut |line| {
                let _ = writeln!(stderr, "{line}");
            })
            .await?;
            store.close().await;
        }
        Command::Locks { command } => {
            let store = open(&cli.url).await?;
            commands::locks::run(&store, &command, format, &mut stdout).await?;
            store.close().await;
        }
        Command::Deadletters { command } => {
            let store = open(&cli.url).await?;
            commands::deadletters::run(&store, &command, format, &mut stdout).await?;
            store.close().await;
        }
        Command::Demo(args) => {
            let config = config(&cli.url)?;
            commands::demo::run(&config, &args, format, &mut stdout).await?;
        }
        Command::Bench(args) => {
            commands::bench::run(&config(&cli.url)?, &args, format, &mut stdout).await?
        }
    }
    stdout.flush()?;
    Ok(())
}

/// The store configuration for `url`, with the other `OPSTORE_*` variables
/// (pool size, timeouts, TLS files, database) from the environment.
pub fn config(url: &str) -> Result<StoreConfig, CliError> {
    StoreConfig::from_lookup(|name| {
        if name == "OPSTORE_URL" {
            Some(url.to_owned())
        } else {
            std::env::var(name).ok()
        }
    })
    .map_err(|e| CliError::store("store configuration", e))
}

/// Connects to `url` without migrating.
pub async fn connect(url: &str) -> Result<DataStore, CliError> {
    let config = config(url)?;
    let store = wiring::connect(&config)
        .await
        .map_err(|e| connect_error(&config, e))?;
    Ok(DataStore::from_store(store))
}

/// Connects to `url` and makes sure every domain entity's storage exists.
pub async fn open(url: &str) -> Result<DataStore, CliError> {
    let config = config(url)?;
    DataStore::open(&config)
        .await
        .map_err(|e| connect_error(&config, e))
}

/// An error from opening a store, naming the redacted URL and never the
/// password, whatever the driver put in its message.
pub fn connect_error(config: &StoreConfig, error: opstore_domain::StoreError) -> CliError {
    let context = format!("opening {}", config.url.redacted());
    let err = CliError::store(&context, error);
    match password_of(config.url.expose()) {
        Some(secret) if err.line().contains(secret) => {
            let line = err.line().replace(secret, "***");
            if err.code() == 2 {
                CliError::usage(line)
            } else {
                CliError::runtime(line)
            }
        }
        _ => err,
    }
}

/// The password in `scheme://user:password@host…`, if any.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = &authority[..authority.rfind('@')?];
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then_some(password)
}

/// Prints `error` to stderr as one line and returns its exit code.
pub fn report(error: &CliError) -> ExitCode {
    if error.kind() == error::ErrorKind::Closed {
        return error.exit_code();
    }
    eprintln!("error: {}", error.line());
    error.exit_code()
}

/// Help and version go to stdout with code 0; any other parse error becomes one
/// line on stderr with code 2.
fn clap_exit(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ClapErrorKind::DisplayHelp
        | ClapErrorKind::DisplayVersion
        | ClapErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            if error.kind() == ClapErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // clap's message is a paragraph followed by usage; keep the paragraph.
            let text = error.render().to_string();
            let paragraph: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let joined = paragraph.join(" ");
            let first = joined.strip_prefix("error: ").unwrap_or(&joined);
            let first = if first.is_empty() {
                "invalid arguments"
            } else {
                first
            };
            report(&CliError::usage(format!("{first} (see --help)")))
        }
    }
}

/// Logs go to stderr, at `default` and above unless `RUST_LOG` says otherwise.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A panic is a bug, but the user still gets one line and no backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_owned());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error{at}: {}", error::one_line(&message));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_for_scrubbing() {
        assert_eq!(password_of("postgres://u:s3cret@h:5432/db"), Some("s3cret"));
        assert_eq!(password_of("postgres://u@h/db"), None);
        assert_eq!(password_of("memory://"), None);
    }
}
