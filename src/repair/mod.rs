//! Repairs after damage: `repair index` rebuilds the index segments from the pack headers;
//! `repair snapshots` writes new snapshots without the files whose data is lost.
//!
//! Both follow the commit protocol: everything new is written (and durable) before anything
//! old is deleted, so an interrupted repair leaves the repository as before plus garbage, or
//! as after.

pub mod index;
pub mod snapshots;
