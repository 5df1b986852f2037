//! Rebuilds the crate when a migration is added or removed: `sqlx::migrate!` embeds the
//! migrations at compile time and tracks the files it read, but not the folder's listing.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
