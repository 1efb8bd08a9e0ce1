//! Domain services, one module per source system.
