//! Fixture: answers `v2`; swapped with its twin by the hot-swap tests.

guest::versioned_handler!("v2");
