//! `inspect`: what an SSTable is and which keys its chunks are under, read from the headers
//! (nothing is decrypted, no key is needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::rekey::find::{self, Found, Location, Table};
use crate::rekey::plan::{self, Load};
use crate::sstable::scylla::ProviderKind;
use crate::sstable::Descriptor;

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub data: String,
    pub version: String,
    pub format: String,
    pub generation: String,
    pub class: Option<String>,
    pub encrypted: bool,
    pub options: BTreeMap<String, String>,
    pub cipher: Option<String>,
    pub key_bits: Option<u32>,
    pub provider: Option<String>,
    pub chunk_length: Option<u32>,
    pub chunks: Option<usize>,
    pub data_length: Option<u64>,
    pub max_compressed_length: Option<i32>,
    /// Chunks per key, from the key headers (or the table's key file for header-less chunks).
    pub keys: BTreeMap<String, usize>,
    /// Chunks stored in plaintext (FORMAT.md 2.5).
    pub raw_chunks: usize,
    /// Component → size in bytes.
    pub components: BTreeMap<String, u64>,
    pub page_encrypted: Vec<String>,
    /// Encrypted index pages per key, and encrypted Statistics.db components per key.
    pub index_pages: BTreeMap<String, usize>,
    pub metadata: BTreeMap<String, usize>,
    /// ScyllaDB: the component files encrypted whole (FORMAT.md 4.1); `keys` then counts files.
    pub encrypted_components: Vec<String>,
    pub error: Option<String>,
}

/// What an argument names: its SSTables, and (for a folder) entries that could be SSTable files
/// but cannot be read as such, with why.
pub type Targets = (Vec<Found>, Vec<(PathBuf, String)>);

/// Resolves an argument to SSTables: a component file, a prefix (`…/nb-1-big-`), or a folder.
pub fn targets(arg: &Path) -> Result<Targets> {
    let table = |dir: &Path| Table {
        keyspace: String::new(),
        table: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dir: dir.to_path_buf(),
    };
    let mk = |desc: Descriptor, present: Vec<String>| Found {
        table: table(&desc.dir),
        location: Location::Live,
        desc,
        present,
    };
    if arg.is_dir() {
        let (sstables, odd) = find::sstables_and_odd_entries_in(arg)?;
        let v: Vec<Found> = sstables.into_values().map(|(d, p)| mk(d, p)).collect();
        if v.is_empty() && odd.is_empty() {
            return Err(Error::Usage(format!(
                "{}: no SSTables (no *-Data.db) in this folder",
                arg.display()
            )));
        }
        return Ok((v, odd));
    }
    // A prefix without the component: add a dummy component to parse it.
    let s = arg.to_string_lossy();
    let probe: PathBuf = if s.ends_with("-big-") || s.ends_with("-bti-") {
        PathBuf::from(format!("{s}Data.db"))
    } else if s.ends_with("-big") || s.ends_with("-bti") {
        PathBuf::from(format!("{s}-Data.db"))
    } else {
        arg.to_path_buf()
    };
    let (desc, _) = Descriptor::from_path(&probe)?;
    let all = find::sstables_in(&desc.dir)?;
    let (d, p) = all
        .into_values()
        .find(|(d, _)| d.prefix() == desc.prefix())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: no such SSTable (no {} found)",
                arg.display(),
                desc.data_path().display()
            ))
        })?;
    Ok((vec![mk(d, p)], Vec::new()))
}

/// An entry of a folder that could be an SSTable file but cannot be read as one.
pub fn unreadable(path: &Path, why: &str) -> Inspection {
    Inspection {
        data: path.display().to_string(),
        version: String::new(),
        format: String::new(),
        generation: String::new(),
        class: None,
        encrypted: false,
        options: BTreeMap::new(),
        cipher: None,
        key_bits: None,
        provider: None,
        chunk_length: None,
        chunks: None,
        data_length: None,
        max_compressed_length: None,
        keys: BTreeMap::new(),
        raw_chunks: 0,
        components: BTreeMap::new(),
        page_encrypted: Vec::new(),
        index_pages: BTreeMap::new(),
        metadata: BTreeMap::new(),
        encrypted_components: Vec::new(),
        error: Some(why.to_string()),
    }
}

pub fn inspect(f: &Found) -> Inspection {
    let d = &f.desc;
    let mut out = Inspection {
        data: d.data_path().display().to_string(),
        version: d.version.clone(),
        format: d.format.as_str().into(),
        generation: d.generation.to_string(),
        class: None,
        encrypted: false,
        options: BTreeMap::new(),
        cipher: None,
        key_bits: None,
        provider: None,
        chunk_length: None,
        chunks: None,
        data_length: None,
        max_compressed_length: None,
        keys: BTreeMap::new(),
        raw_chunks: 0,
        components: BTreeMap::new(),
        page_encrypted: Vec::new(),
        index_pages: BTreeMap::new(),
        metadata: BTreeMap::new(),
        encrypted_components: Vec::new(),
        error: None,
    };
    for c in &f.present {
        if let Ok(m) = std::fs::metadata(d.path(c)) {
            out.components.insert(c.clone(), m.len());
        }
        if (c == "Partitions.db" || c == "Rows.db")
            && plan::is_page_encrypted(&d.path(c)).unwrap_or(false)
        {
            out.page_encrypted.push(c.clone());
        }
    }
    // The CompressionInfo alone, so that even a refused SSTable shows its class and options.
    let ci_path = d.path("CompressionInfo.db");
    if let Ok(bytes) = crate::util::read_small(&ci_path, 1 << 30) {
        if let Ok(ci) = crate::sstable::CompressionInfo::parse(
            &bytes,
            d.has_max_compressed_length(),
            None,
            &ci_path,
        ) {
            out.class = Some(ci.class.clone());
            out.options = ci.options.iter().cloned().collect();
            out.chunk_length = Some(ci.chunk_length);
            out.chunks = Some(ci.chunk_count());
            out.data_length = Some(ci.data_length);
            out.max_compressed_length = ci.max_compressed_length;
        }
    }
    match plan::load(f, None) {
        Ok(Load::Encrypted(l)) => {
            out.encrypted = true;
            out.cipher = Some(l.envelope.cipher.transformation.clone());
            out.key_bits = Some(l.envelope.cipher.key_bits);
            out.provider = Some(l.envelope.provider.factory_name().into());
            out.keys = l.key_counts();
            out.raw_chunks = l.raw_chunks();
            out.index_pages = l.page_key_counts();
            out.metadata = l.metadata_key_counts();
        }
        Ok(Load::Scylla(s)) => {
            // Scylla.db says it all; the encrypted CompressionInfo.db says nothing without a key.
            out.encrypted = true;
            out.class = None;
            (out.chunk_length, out.chunks, out.data_length) = (None, None, None);
            out.max_compressed_length = None;
            out.options = s
                .encryption
                .options
                .iter()
                .flat_map(|o| o.pairs().iter().cloned())
                .collect();
            out.cipher = Some(s.spec.cipher.algorithm.clone());
            out.key_bits = Some(s.spec.cipher.key_bits);
            out.provider = Some(
                match s.spec.provider.kind {
                    ProviderKind::Local => "LocalFileSystemKeyProviderFactory",
                    _ => "KmipKeyProviderFactory",
                }
                .into(),
            );
            out.keys = BTreeMap::from([(s.key.to_string(), s.files.len())]);
            out.encrypted_components = s.files.iter().map(|f| f.component.clone()).collect();
        }
        Ok(Load::Unencrypted { .. }) => {}
        Err(e) => out.error = Some(e.to_string()),
    }
    out
}
