//! Running cargo with its output streamed to the terminal while libtest's summaries
//! are counted.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

/// Test outcomes of one backend, one step or the whole run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// Reads cargo's and libtest's output line by line.
///
/// Counts every `test result:` line (unit, integration and doc-test binaries alike),
/// a crate that failed to compile as one failure, and a test binary that died without
/// a summary (a crash or an abort) as one failure. With `--list`, counts listed tests.
/// Remembers which tests passed in which binary, so that [`recount_skips`] can move
/// the ones that only skipped to `skipped`.
///
/// [`recount_skips`]: OutputParser::recount_skips
#[derive(Debug, Default)]
pub struct OutputParser {
    pub counts: Counts,
    pub listed: u64,
    /// Whether the test binary running now has already reported failed tests.
    current_reported_failure: bool,
    /// File name of the test binary running now (empty for doc tests).
    current_binary: String,
    /// `(binary, test)` of every test reported `ok`.
    passed_tests: HashSet<(String, String)>,
}

impl OutputParser {
    pub fn feed(&mut self, raw: &str) {
        let line = strip_ansi(raw);
        let line = line.trim();
        if line.starts_with("Running ") && line.ends_with(')') {
            self.current_reported_failure = false;
            self.current_binary = binary_of_running_line(line).to_owned();
        } else if line.starts_with("Doc-tests ") {
            self.current_reported_failure = false;
            self.current_binary.clear();
        } else if let Some(test) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... ok"))
        {
            self.passed_tests
                .insert((self.current_binary.clone(), test.to_owned()));
        } else if let Some(summary) = line.strip_prefix("test result: ") {
            let passed = number_before(summary, " passed");
            let failed = number_before(summary, " failed");
            let ignored = number_before(summary, " ignored");
            self.counts.passed += passed;
            self.counts.failed += failed;
            self.counts.skipped += ignored;
            self.current_reported_failure = failed > 0;
        } else if line.starts_with("error: test failed, to rerun pass") {
            if !self.current_reported_failure {
                self.counts.failed += 1;
            }
            self.current_reported_failure = false;
        } else if line.starts_with("error: could not compile") {
            self.counts.failed += 1;
        } else if line.ends_with(": test") {
            // `--list` output: `path::name: test`, or `src/lib.rs - item (line 3): test`.
            self.listed += 1;
        }
    }
}

impl OutputParser {
    /// Moves every passed test named in a skip record (`binary<TAB>test<TAB>why`,
    /// written by `opstore_testkit::skip`) from `passed` to `skipped`, once per test.
    /// A test that skipped and then failed stays failed.
    pub fn recount_skips<'a>(&mut self, records: impl IntoIterator<Item = &'a str>) {
        let mut moved = HashSet::new();
        for record in records {
            let mut fields = record.splitn(3, '\t');
            let (Some(binary), Some(test)) = (fields.next(), fields.next()) else {
                continue;
            };
            let key = (binary.to_owned(), test.to_owned());
            if self.passed_tests.contains(&key) && moved.insert(key) {
                self.counts.passed = self.counts.passed.saturating_sub(1);
                self.counts.skipped += 1;
            }
        }
    }
}

/// The test binary's file name in `Running tests/a.rs (target/debug/deps/a-1f2e)`.
fn binary_of_running_line(line: &str) -> &str {
    let path = line
        .rsplit_once('(')
        .map_or("", |(_, rest)| rest.trim_end_matches(')'));
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// Every skip record in `dir` (one per line of its files), for
/// [`OutputParser::recount_skips`]. A missing directory has none.
pub fn read_skip_records(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            records.extend(text.lines().map(str::to_owned));
        }
    }
    records
}

/// The number right before `label` in a libtest summary such as `3 passed; 1 failed`.
fn number_before(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            let part = part
                .trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ");
            part.strip_suffix(label)?.trim().parse().ok()
        })
        .unwrap_or(0)
}

/// Removes ANSI escape sequences (colours) from a line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// Prints a step header so the streamed output shows which command produced it.
pub fn announce(command: &Command) {
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let program = command.get_program().to_string_lossy();
    let program = program.rsplit('/').next().unwrap_or("cargo");
    println!("\n==> {program} {}", args.join(" "));
}

/// Runs `command` with stdout and stderr merged into one pipe, copies every line to
/// this process's stdout as it arrives, and feeds it to `parser`.
pub fn stream(mut command: Command, parser: &mut OutputParser) -> Result<ExitStatus, String> {
    if std::io::stdout().is_terminal() && std::env::var_os("CARGO_TERM_COLOR").is_none() {
        command.env("CARGO_TERM_COLOR", "always");
    }
    stream_lines(command, |line| parser.feed(line))
}

/// Runs `command` with stdout and stderr merged into one pipe, copies every line to
/// this process's stdout as it arrives, and hands it (with its newline) to `on_line`.
pub fn stream_lines(
    mut command: Command,
    mut on_line: impl FnMut(&str),
) -> Result<ExitStatus, String> {
    announce(&command);
    let (reader, writer) = std::io::pipe().map_err(|e| format!("creating a pipe: {e}"))?;
    let writer_err = writer
        .try_clone()
        .map_err(|e| format!("creating a pipe: {e}"))?;
    command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err);
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", command.get_program()))?;
    // The command holds the pipe's write ends; drop it so the reader sees EOF.
    drop(command);
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    let stdout = std::io::stdout();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let mut out = stdout.lock();
                // A closed terminal must not stop the run; the counts still matter.
                let _ = out.write_all(&buf);
                let _ = out.flush();
                on_line(&String::from_utf8_lossy(&buf));
            }
            Err(e) => return Err(format!("reading command output: {e}")),
        }
    }
    child
        .wait()
        .map_err(|e| format!("waiting for command: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> OutputParser {
        let mut parser = OutputParser::default();
        for line in text.lines() {
            parser.feed(line);
        }
        parser
    }

    #[test]
    fn sums_every_test_result_line() {
        let parser = parse(
            "     Running unittests src/lib.rs (target/debug/deps/a-1)\n\
             test result: ok. 5 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
             \x20  Doc-tests a\n\
             test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s\n\
             error: test failed, to rerun pass `-p a --doc`\n",
        );
        assert_eq!(
            parser.counts,
            Counts {
                passed: 6,
                failed: 3,
                skipped: 2
            }
        );
    }

    #[test]
    fn crashed_binary_without_summary_counts_as_one_failure() {
        let parser = parse(
            "     Running tests/b.rs (target/debug/deps/b-3)\n\
             running 4 tests\n\
             error: test failed, to rerun pass `--test b`\n\
             Caused by:\n\
             \x20 process didn't exit successfully: `b-3` (signal: 6, SIGABRT: process abort signal)\n",
        );
        assert_eq!(parser.counts.failed, 1);
        assert_eq!(parser.counts.passed, 0);
    }

    #[test]
    fn compile_error_counts_as_one_failure() {
        let parser = parse(
            "error: could not compile `opstore-memory` (lib test) due to 2 previous errors\n",
        );
        assert_eq!(parser.counts.failed, 1);
    }

    #[test]
    fn coloured_summary_is_counted() {
        let parser = parse(
            "test result: \x1b[32mok\x1b[0m. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n",
        );
        assert_eq!(parser.counts.passed, 7);
    }

    #[test]
    fn skipped_tests_move_from_passed_to_skipped_once() {
        let mut parser = parse(
            "     Running tests/conformance.rs (target/debug/deps/conformance-1a2b)\n\
             test cases::a ... ok\n\
             test cases::b ... ok\n\
             test cases::c ... FAILED\n\
             test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
             \x20    Running tests/other.rs (target/debug/deps/other-9f)\n\
             test cases::a ... ok\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n",
        );
        parser.recount_skips([
            "conformance-1a2b\tcases::a\tpostgres: OPSTORE_POSTGRES_URL is not set",
            "conformance-1a2b\tcases::a\tmongo: OPSTORE_MONGODB_URL is not set",
            // Skipped, then failed: stays a failure.
            "conformance-1a2b\tcases::c\tmongo: unreachable",
            // Unknown binary or test: nothing to move.
            "elsewhere-00\tcases::b\tmongo: unreachable",
            "malformed",
        ]);
        assert_eq!(
            parser.counts,
            Counts {
                passed: 2,
                failed: 1,
                skipped: 1
            }
        );
    }

    #[test]
    fn skip_records_are_read_from_every_file_in_the_directory() {
        let dir = std::env::temp_dir().join(format!("xtask-skip-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("1-0.skip"), "bin\tt1\tpostgres: down\n").unwrap();
        std::fs::write(dir.join("1-1.skip"), "bin\tt2\tmongo: down\n").unwrap();
        let mut records = read_skip_records(&dir);
        records.sort();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(records, ["bin\tt1\tpostgres: down", "bin\tt2\tmongo: down"]);
        assert!(read_skip_records(&dir).is_empty());
    }

    #[test]
    fn listed_tests_are_counted_without_summaries() {
        let parser = parse(
            "tests::one: test\n\
             conformance::repository::get_missing_is_not_found: test\n\
             \n\
             2 tests, 0 benchmarks\n\
             src/lib.rs - Store (line 12): test\n\
             1 test, 0 benchmarks\n",
        );
        assert_eq!(parser.listed, 3);
        assert_eq!(parser.counts, Counts::default());
    }
}
