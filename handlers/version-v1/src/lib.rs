//! Fixture: answers `v1`; swapped with its twin by the hot-swap tests.

guest::versioned_handler!("v1");
