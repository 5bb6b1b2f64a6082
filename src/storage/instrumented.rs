//! Test storage: a storage with hooks around reads and writes, for tests that need a file to
//! vanish at a given moment, writes to arrive damaged or fail, or uploads to take time.

use std::ops::Range;

use super::{ListedObject, OpendalStorage, Storage};
use crate::error::Result;

type PathHook = Box<dyn Fn(&OpendalStorage, &str) + Send + Sync>;
type WriteHook = Box<dyn Fn(&str, &mut Vec<u8>) -> Result<()> + Send + Sync>;

pub struct Instrumented {
    pub inner: OpendalStorage,
    /// Runs before each read (whole or range) of a path.
    pub before_read: PathHook,
    /// Runs before each write; may change the bytes written, or fail the write.
    pub before_write: WriteHook,
    /// Runs after each write that succeeded.
    pub after_write: PathHook,
}

impl Instrumented {
    /// No hooks yet; `inner` is usually a second handle on a test's storage.
    pub fn new(inner: OpendalStorage) -> Self {
        Instrumented {
            inner,
            before_read: Box::new(|_, _| {}),
            before_write: Box::new(|_, _| Ok(())),
            after_write: Box::new(|_, _| {}),
        }
    }
}

impl Storage for Instrumented {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        (self.before_read)(&self.inner, path);
        self.inner.read(path)
    }
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        (self.before_read)(&self.inner, path);
        self.inner.read_range(path, range)
    }
    fn write(&self, path: &str, mut bytes: Vec<u8>) -> Result<()> {
        (self.before_write)(path, &mut bytes)?;
        self.inner.write(path, bytes)?;
        (self.after_write)(&self.inner, path);
        Ok(())
    }
    fn list(&self, dir: &str, recursive: bool) -> Result<Vec<ListedObject>> {
        self.inner.list(dir, recursive)
    }
    fn exists(&self, path: &str) -> Result<bool> {
        self.inner.exists(path)
    }
    fn size(&self, path: &str) -> Result<u64> {
        self.inner.size(path)
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(path)
    }
    fn requests_in_flight(&self) -> usize {
        self.inner.requests_in_flight()
    }
}
