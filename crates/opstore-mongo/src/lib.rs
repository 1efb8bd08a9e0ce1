//! opstore-mongo.
