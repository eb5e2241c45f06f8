//! Integration tests of the ship image in the real Docker engine, against `ship-api.md`.
//! Run by `cargo xtask test` after it has built the images (see `ship_image_tests`).

mod files;
mod hardening;
mod isolation;
mod lifecycle;
mod python;
mod routes;
mod runtime;
mod shell;
mod spare;
mod terminal;
