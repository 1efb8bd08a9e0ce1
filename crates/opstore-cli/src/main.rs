//! The `opstore` binary.

fn main() -> std::process::ExitCode {
    opstore_cli::main_entry()
}
