//! Fixture: a valid wasm32-wasip2 component that exports nothing, so it cannot
//! serve HTTP; hot swap must refuse it and keep the previous version.
