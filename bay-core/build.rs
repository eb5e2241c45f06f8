//! Rebuilds bay-core when a migration changes, so `embed_migrations!` never misses one.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
