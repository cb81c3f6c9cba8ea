//! IVs and ids from the operating system's CSPRNG (getrandom(2)), fetched in batches: one syscall
//! per 16-byte IV would cost more than encrypting a small chunk.

use crate::error::{Error, Result};

pub fn fill(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Key(format!("the OS random generator failed: {e}")))
}

/// Hands out IVs from a buffer refilled from the OS 4 KiB at a time. Never reuses a byte.
pub struct IvSource {
    buf: [u8; 4096],
    pos: usize,
}

impl IvSource {
    pub fn new() -> Self {
        IvSource {
            buf: [0; 4096],
            pos: 4096,
        }
    }

    pub fn next(&mut self, out: &mut [u8]) -> Result<()> {
        if out.len() > self.buf.len() {
            return fill(out);
        }
        if self.pos + out.len() > self.buf.len() {
            fill(&mut self.buf)?;
            self.pos = 0;
        }
        out.copy_from_slice(&self.buf[self.pos..self.pos + out.len()]);
        // Consumed bytes are wiped so that they cannot be handed out (or leaked) twice.
        self.buf[self.pos..self.pos + out.len()].fill(0);
        self.pos += out.len();
        Ok(())
    }
}

impl Default for IvSource {
    fn default() -> Self {
        Self::new()
    }
}
