//! opstore-cli.
