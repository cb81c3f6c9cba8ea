//! Read-only shared mappings of input files.
//!
//! The rewrite reads every byte of every Data.db once. Through `pread` that is a copy from the page
//! cache into a buffer (measured at ~15% of a single-thread rekey on tmpfs); through a mapping the
//! decryption reads the page cache directly. Resident memory stays bounded: callers
//! [`release`](Mapped::release) each range once they are done with it, which only drops this
//! process's page-table entries (the page cache keeps the pages; a later access maps them again).
//!
//! A mapped file that shrinks under the process makes accesses past its end fault with SIGBUS.
//! The data folders are held exclusively while the tool runs (see `rekey::exclusive`), sizes are
//! checked against the plan before mapping, and `main` turns a SIGBUS into a clear message and a
//! non-zero exit with nothing committed for the SSTable in progress.

use std::fs::File;
use std::ops::Range;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// A whole file mapped read-only. Empty files map to an empty slice.
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and lives until drop; sharing `&[u8]` across threads is sound.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

const PAGE: usize = 4096;

impl Mapped {
    /// Maps the first `len` bytes of `file` (the size the plan saw).
    pub fn new(file: &File, path: &Path, len: u64) -> Result<Mapped> {
        let actual = file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        if actual < len {
            return Err(Error::corrupt(
                path,
                format!("shrank from {len} to {actual} bytes since it was planned"),
            ));
        }
        let len = usize::try_from(len)
            .map_err(|_| Error::unsupported(path, "larger than the address space"))?;
        if len == 0 {
            return Ok(Mapped {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh read-only shared mapping of a valid descriptor; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::io(path, "map", std::io::Error::last_os_error()));
        }
        // SAFETY: advisory on our own mapping; failure is harmless.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Ok(Mapped { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for the lifetime of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// Bytes `r`, or a "truncated" error naming the file.
    pub fn get(&self, r: Range<u64>, path: &Path) -> Result<&[u8]> {
        if r.start > r.end || r.end > self.len as u64 {
            return Err(Error::corrupt(
                path,
                format!(
                    "a read of bytes {}..{} runs past the end ({} bytes): the file is truncated",
                    r.start, r.end, self.len
                ),
            ));
        }
        Ok(&self.bytes()[r.start as usize..r.end as usize])
    }

    /// Drops this process's page-table entries for the whole pages inside `r`, keeping resident
    /// memory bounded. The data stays in the page cache and is mapped again if read again.
    pub fn release(&self, r: Range<u64>) {
        let end = (r.end as usize).min(self.len);
        // Whole pages only: a partly used page may still be read by a neighbour.
        let (a, b) = ((r.start as usize).div_ceil(PAGE) * PAGE, end / PAGE * PAGE);
        if a >= b {
            return;
        }
        // SAFETY: [a, b) lies inside our mapping and `a` is page aligned; advisory only (for
        // MADV_DONTNEED on a shared file mapping, the contents are reloaded from the file).
        unsafe {
            libc::madvise(self.ptr.add(a), b - a, libc::MADV_DONTNEED);
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping the mapping created in `new`, exactly once.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_reads_and_releases() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i * 7) as u8).collect();
        f.write_all(&data).unwrap();
        let m = Mapped::new(f.as_file(), f.path(), data.len() as u64).unwrap();
        assert_eq!(m.bytes(), &data[..]);
        m.release(10..(2 * PAGE + 5) as u64);
        // Released pages read back from the page cache.
        assert_eq!(m.get(0..data.len() as u64, f.path()).unwrap(), &data[..]);
        assert!(m.get(0..data.len() as u64 + 1, f.path()).is_err());
        assert!(Mapped::new(f.as_file(), f.path(), data.len() as u64 + 1).is_err());
        let e = tempfile::NamedTempFile::new().unwrap();
        assert!(Mapped::new(e.as_file(), e.path(), 0).unwrap().is_empty());
    }
}
