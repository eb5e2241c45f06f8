//! The driver factory, re-exported from the [`bay_factory`] crate (shared with the `bay` CLI).

pub use bay_factory::{FactoryError, build_driver};
