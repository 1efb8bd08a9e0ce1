//! Conformance cases, one public async fn per behaviour, grouped by port.
//!
//! Every case is listed once in [`__all_cases!`](crate::__all_cases); case names
//! are unique across modules because they become test function names.

pub mod repository;

/// Lists every case. Adding a case means adding a line here.
#[doc(hidden)]
#[macro_export]
macro_rules! __all_cases {
    ($h:expr) => {
        $crate::__conformance_test!($h, repository::insert_then_get_returns_the_document);
        $crate::__conformance_test!($h, repository::get_missing_key_is_none);
        $crate::__conformance_test!($h, repository::update_of_missing_key_is_not_found);
    };
}
