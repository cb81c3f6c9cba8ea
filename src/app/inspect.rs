//! `inspect`: what an SSTable is and which keys its records name (no key needed).

use crate::app::cli::InspectArgs;
use crate::app::exit::Exit;
use sstable_rekey::error::Result;
use sstable_rekey::rekey::inspect::{self, Inspection};

pub fn run(a: &InspectArgs) -> Result<Exit> {
    let mut all = Vec::new();
    for p in &a.paths {
        let (found, odd) = inspect::targets(p)?;
        for f in &found {
            all.push(inspect::inspect(f));
        }
        all.extend(odd.iter().map(|(p, why)| inspect::unreadable(p, why)));
    }
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&all).expect("serializable")
        );
    } else {
        for i in &all {
            print_human(i);
        }
    }
    Ok(if all.iter().any(|i| i.error.is_some()) {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// One SSTable, for people.
fn print_human(i: &Inspection) {
    outln!("{}", i.data);
    if !i.version.is_empty() {
        outln!(
            "  version {} ({}), generation {}",
            i.version,
            i.format,
            i.generation
        );
    }
    if let Some(c) = &i.class {
        outln!(
            "  class {c}{}",
            if i.encrypted { " (encrypted)" } else { "" }
        );
    }
    for (k, v) in &i.options {
        outln!("  option {k} = {v}");
    }
    if let (Some(cl), Some(n), Some(dl)) = (i.chunk_length, i.chunks, i.data_length) {
        outln!("  {n} chunks of {} KiB, {dl} bytes uncompressed", cl / 1024);
    }
    if let Some(m) = i.max_compressed_length {
        outln!(
            "  maxCompressedLength {}",
            if m == i32::MAX {
                "none (min_compress_ratio 0)".to_string()
            } else {
                m.to_string()
            }
        );
    }
    for (k, n) in &i.keys {
        outln!("  {n} chunks under {k}");
    }
    if i.raw_chunks > 0 {
        outln!(
            "  {} chunks stored in PLAINTEXT (min_compress_ratio): unencrypted data on disk",
            i.raw_chunks
        );
    }
    for c in &i.page_encrypted {
        outln!("  {c} is page-encrypted");
    }
    for (k, n) in &i.index_pages {
        outln!("  {n} index pages under {k}");
    }
    for (k, n) in &i.metadata {
        outln!("  {n} Statistics.db components under {k}");
    }
    let sizes: Vec<String> = i
        .components
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    outln!("  components: {}", sizes.join(", "));
    if let Some(e) = &i.error {
        outln!("  ERROR: {e}");
    }
}
