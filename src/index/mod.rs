//! Which blob lives where. The repository's index segments are the truth; `LocalIndex` is a
//! SQLite cache of their union that can always be rebuilt from them (design rule 1).

pub mod inventory;
pub mod local;
pub mod segment;

pub use inventory::{IndexedPack, Inventory};
pub use local::{LocalIndex, OpenReport, PackListing, PreparedIndex, Unjudged};
pub use segment::{IndexSegment, PackRecord, SEGMENT_BLOBS};
