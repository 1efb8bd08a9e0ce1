//! opstore-app.
