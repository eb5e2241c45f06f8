//! API tests: the real router over a temporary database with the fake driver and fake ship.

mod harness;

mod auth_routing;
mod cors;
mod exec;
mod meta;
mod robustness;
mod sessions;
mod ships;
mod terminal;
mod transfer;
mod validation;
mod wire;
