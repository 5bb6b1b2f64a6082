//! cairn: content-addressed, deduplicating, encrypted backups.
//!
//! The data path, one module per stage: `walk` (sources) → `chunk` (FastCDC) → `crypto`
//! (keyed ids, encryption) → `pack` / `packer` (packfiles) → `storage` (opendal) → `index`
//! (segments and the local SQLite cache) → `tree` and `snapshot` (metadata). `backup`,
//! `restore` and `copy` drive the stages; `repo` ties storage, config and keys together. The format on
//! storage is specified in FORMAT.md.

pub mod backup;
pub mod blobs;
pub mod check;
pub mod chunk;
pub mod codec;
pub mod compress;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod failpoint;
pub mod host;
pub mod ids;
pub mod index;
pub mod pack;
pub mod packer;
pub mod prune;
pub mod repack;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod storage;
pub mod terminal;
pub mod tree;
pub mod upload;
pub mod walk;

pub use error::{Error, Result};
