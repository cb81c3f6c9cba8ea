//! TOC.txt: one component name per line, `\n` after each, listing itself (FORMAT.md 1.1).

use std::path::Path;

use crate::error::{Error, Result};
use crate::util::read_small;

pub fn read(path: &Path) -> Result<Vec<String>> {
    let buf = read_small(path, 64 * 1024)?;
    let text = String::from_utf8(buf).map_err(|_| Error::corrupt(path, "TOC.txt is not text"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let c = line.trim();
        if c.is_empty() {
            continue;
        }
        if c.contains('/') || c.contains('\0') || c.starts_with('.') {
            return Err(Error::corrupt(path, format!("bad component name {c:?}")));
        }
        if !out.iter().any(|x: &String| x == c) {
            out.push(c.to_string());
        }
    }
    if out.is_empty() {
        return Err(Error::corrupt(path, "TOC.txt lists no components"));
    }
    Ok(out)
}
