//! Step 2, plan: what each SSTable is (format, class, cipher), which key every chunk is under (from
//! the key headers, without decrypting), and what it becomes. Nothing is written here.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use crate::crypto::envelope::{ClassKind, ProviderKind, MAX_KMIP_ID_LEN, PROVIDER_PACKAGE};
use crate::crypto::AesKey;
use crate::crypto::{ChunkClass, CipherSpec, Envelope, KeyHeader};
use crate::error::{Error, Result};
use crate::fsio::free_space;
use crate::keys::{canonical, KeyId, KeyRef};
use crate::rekey::find::Found;
use crate::rekey::report::{alter_statement, human_bytes, SstableReport};
use crate::sstable::data::read_at;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Chunks whose headers are read in parallel before being interned.
const SCAN_BLOCK: usize = 16384;
use crate::rekey::staging::ChunkRun;
use crate::sstable::pages::{self, PAGE};
use crate::sstable::{statistics, toc, CompressionInfo, Format};
use crate::util::read_small;

/// The error of a staging manifest whose chunk runs do not describe its (unchanged) source.
const STAGED_RUNS_DAMAGED: &str = "its staging manifest's chunk runs do not match the file: the staged copy is damaged. Rekey it with --ignore-staged, or remove the staged copies with `sstable-rekey stage --discard`";

/// Per-chunk facts from the scan. `key` indexes [`Loaded::keys`]; `RAW` marks a plaintext chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkMeta {
    pub key: u32,
    pub header_len: u32,
    /// On-disk length without the CRC.
    pub len: u32,
}

pub const RAW: u32 = u32::MAX;

/// An SSTable read far enough to plan its rewrite.
#[derive(Debug)]
pub struct Loaded {
    pub found: Found,
    pub toc: Vec<String>,
    pub ci: CompressionInfo,
    pub envelope: Envelope,
    pub data_len: u64,
    pub chunks: Vec<ChunkMeta>,
    /// The distinct keys seen, in first-seen order (chunks, pages and metadata components).
    pub keys: Vec<KeyId>,
    /// Page-encrypted index files (DSE 6.8+/HCD BTI: Partitions.db, Rows.db), FORMAT.md 2.6.
    pub paged: Vec<PagedFile>,
    /// Encrypted Statistics.db components, when the SSTable encrypts its metadata.
    pub statistics: Option<Vec<StatsComponent>>,
}

/// One page-encrypted index file: per page, its key, header length and blob length.
#[derive(Debug, Clone)]
pub struct PagedFile {
    pub component: String,
    pub pages: Vec<ChunkMeta>,
}

impl PagedFile {
    /// Every page stays where it is: same offset, same length.
    pub fn spans(&self) -> Vec<Span> {
        (0..self.pages.len())
            .map(|i| Span {
                in_off: (i * PAGE) as u64,
                in_len: PAGE as u32,
                out_off: (i * PAGE) as u64,
                out_len: PAGE as u32,
            })
            .collect()
    }
}

/// One encrypted Statistics.db component: `H || IV || E(serialized component)`.
#[derive(Debug, Clone)]
pub struct StatsComponent {
    pub kind: i32,
    pub key: u32,
    pub body: Vec<u8>,
}

/// Where a record is and goes. Lengths include the record's 4-byte CRC, if it has one.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub in_off: u64,
    pub in_len: u32,
    pub out_off: u64,
    pub out_len: u32,
}

/// An SSTable with everything resolved: ready to rewrite.
pub struct Job {
    pub loaded: Box<Loaded>,
    pub report: SstableReport,
    /// Old keys by key index; `None` for the target key's own index.
    pub keys: Vec<Option<Arc<AesKey>>>,
    pub target_key: Arc<AesKey>,
    /// The target key's index among the SSTable's keys, when some records are under it already.
    pub target_idx: Option<u32>,
    /// New chunk lengths (without CRC) and offsets, known before any encryption.
    pub new_lens: Vec<u32>,
    pub new_offsets: Vec<u64>,
    /// A staged copy of the rewritten files, checked against this SSTable (see [`super::stage`]).
    pub staged: Option<Box<super::staging::Entry>>,
}

/// Free space for the largest `threads` new SSTables in flight at once, per file system: too
/// little is an error before any work.
pub fn check_space(jobs: &[&Job], threads: usize) -> Result<()> {
    let threads = threads.max(1);
    let mut per_fs: HashMap<u64, (u64, Vec<u64>, std::path::PathBuf)> = HashMap::new();
    for j in jobs {
        let (free, fsid) = free_space(&j.loaded.found.desc.dir)?;
        let e = per_fs
            .entry(fsid)
            .or_insert((free, Vec::new(), j.loaded.found.desc.dir.clone()));
        e.1.push(sum_new_len(&j.new_lens) + (1 << 20));
    }
    for (free, mut sizes, dir) in per_fs.into_values() {
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let need: u64 = sizes.iter().take(threads).sum();
        if need > free {
            return Err(Error::Usage(format!(
                "not enough free space on the filesystem of {}: {} needed for {} SSTable(s) in flight, {} free. Free some space or lower --jobs",
                dir.display(),
                human_bytes(need),
                threads.min(sizes.len()),
                human_bytes(free)
            )));
        }
    }
    Ok(())
}

/// What loading an SSTable found.
#[derive(Debug)]
pub enum Load {
    Encrypted(Box<Loaded>),
    /// A plain Apache compressor: nothing to rekey.
    Unencrypted {
        class: String,
    },
    /// A ScyllaDB SSTable whose component files are encrypted (FORMAT.md 4).
    Scylla(Box<super::scylla::ScyllaLoaded>),
}

impl Loaded {
    /// The chunks as runs of one key header (or raw), for a staging manifest.
    pub fn chunk_runs(&self) -> Vec<ChunkRun> {
        let mut runs: Vec<ChunkRun> = Vec::new();
        let mut last: Option<(u32, u32)> = None;
        for (i, c) in self.chunks.iter().enumerate() {
            let this = (c.key, c.header_len);
            match runs.last_mut() {
                Some(r) if last == Some(this) => r.count += 1,
                _ => runs.push(ChunkRun {
                    first: i,
                    count: 1,
                    raw: c.key == RAW,
                }),
            }
            last = Some(this);
        }
        runs
    }

    /// Each key's name, by key index.
    pub fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.to_string()).collect()
    }

    pub fn raw_chunks(&self) -> usize {
        self.chunks.iter().filter(|c| c.key == RAW).count()
    }

    /// Chunk counts per key (raw chunks excluded).
    pub fn key_counts(&self) -> BTreeMap<String, usize> {
        self.named(self.chunks.iter().filter(|c| c.key != RAW).map(|c| c.key))
    }

    /// Index pages per key.
    pub fn page_key_counts(&self) -> BTreeMap<String, usize> {
        self.named(
            self.paged
                .iter()
                .flat_map(|f| f.pages.iter().map(|p| p.key)),
        )
    }

    /// Encrypted metadata components per key.
    pub fn metadata_key_counts(&self) -> BTreeMap<String, usize> {
        self.named(self.statistics.iter().flatten().map(|c| c.key))
    }

    /// How many records each key index has (chunks of large SSTables number in the millions: they
    /// are counted by index, and each key named once).
    pub fn per_key_index(&self, keys: impl Iterator<Item = u32>) -> Vec<usize> {
        let mut n = vec![0usize; self.keys.len()];
        for k in keys {
            n[k as usize] += 1;
        }
        n
    }

    /// Record counts per key name, from the records' key indexes.
    fn named(&self, keys: impl Iterator<Item = u32>) -> BTreeMap<String, usize> {
        let n = self.per_key_index(keys);
        let mut m = BTreeMap::new();
        for (k, n) in n.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            *m.entry(self.keys[k].to_string()).or_default() += n;
        }
        m
    }

    /// Every record's key (chunks except raw ones, pages, metadata components).
    pub fn record_keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks
            .iter()
            .filter(|c| c.key != RAW)
            .map(|c| c.key)
            .chain(
                self.paged
                    .iter()
                    .flat_map(|f| f.pages.iter().map(|p| p.key)),
            )
            .chain(self.statistics.iter().flatten().map(|c| c.key))
    }

    /// True when the index and metadata files are encrypted too (FORMAT.md 2.6).
    pub fn indexes_encrypted(&self) -> bool {
        !self.paged.is_empty() || self.statistics.is_some()
    }

    /// Where every Data.db chunk (with its CRC) is, and where it goes: at `new_offsets`, with
    /// `new_lens` (without CRC). For reading alone (verify), pass the current layout.
    pub fn data_spans(&self, new_offsets: &[u64], new_lens: &[u32]) -> Vec<Span> {
        (0..self.chunks.len())
            .map(|i| Span {
                in_off: self.ci.offsets[i],
                in_len: self.chunks[i].len + 4,
                out_off: new_offsets[i],
                out_len: new_lens[i] + 4,
            })
            .collect()
    }

    /// The current chunk lengths without CRC (the layout [`Loaded::data_spans`] reads).
    pub fn chunk_lens(&self) -> Vec<u32> {
        self.chunks.iter().map(|c| c.len).collect()
    }

    /// Its counts before any rewrite, into its report.
    pub fn count_into(&self, r: &mut SstableReport) {
        r.chunks = self.chunks.len();
        r.raw_chunks = self.raw_chunks();
        r.keys_before = self.key_counts();
        r.index_pages_before = self.page_key_counts();
        r.metadata_before = self.metadata_key_counts();
    }

    pub fn key_index(&self, id: &KeyId) -> Option<u32> {
        self.keys.iter().position(|k| k == id).map(|i| i as u32)
    }
}

/// FORMAT.md 2.5: DSE 6.7 does not pad a short raw last chunk, so it can look encrypted. When the
/// last chunk fails to parse or decrypt and its length equals its plain length, say so.
pub fn raw_last_chunk_hint(ci: &CompressionInfo, i: usize, on_disk_len: u64) -> &'static str {
    if ci.max_compressed_length.is_some()
        && i + 1 == ci.chunk_count()
        && on_disk_len == ci.plain_len(i) as u64
    {
        " (its length equals its plain length: probably a plaintext last chunk that DSE 6.7 wrote without padding, FORMAT.md 2.5; refusing rather than guessing)"
    } else {
        ""
    }
}

/// The envelope a table's options describe.
pub fn envelope_of(ci: &CompressionInfo, path: &Path) -> Result<Option<Envelope>> {
    let class = match ChunkClass::classify(ci.simple_class()) {
        ClassKind::Plain => return Ok(None),
        ClassKind::Unknown => {
            return Err(Error::unsupported(
                path,
                format!(
                    "compressor class {:?} is not one this tool knows (Encryptor, EncryptingLZ4Compressor, EncryptingSnappyCompressor, EncryptingDeflateCompressor)",
                    ci.class
                ),
            ))
        }
        ClassKind::Encrypted(c) => c,
    };
    let cipher = CipherSpec::from_options(
        ci.option("cipher_algorithm"),
        ci.option("secret_key_strength"),
        ci.option("iv_length"),
    )
    .map_err(|m| Error::unsupported(path, m))?;
    let provider = ProviderKind::from_option(
        ci.option("key_provider")
            .or(ci.option("secret_key_provider_factory_class")),
    )
    .map_err(|m| Error::unsupported(path, m))?;
    Ok(Some(Envelope {
        class,
        provider,
        cipher,
    }))
}

/// The key file a header-less chunk of this table is under.
pub fn table_key_file(ci: &CompressionInfo) -> Result<Option<KeyId>> {
    ci.option("secret_key_file")
        .filter(|p| !p.is_empty())
        .map(|p| canonical(Path::new(p)).map(KeyId::File))
        .transpose()
}

/// The KMIP group of a KMIP-provider table (`kmip_host`, FORMAT.md 2.1): with the id of a
/// record's header, the key's identity. Without it neither DSE nor this tool can tell which
/// server holds the key: that SSTable is refused.
pub fn table_kmip_group(ci: &CompressionInfo, ci_path: &Path) -> Result<String> {
    match ci.option("kmip_host") {
        Some(g) if !g.trim().is_empty() => Ok(g.to_string()),
        _ => Err(Error::unsupported(
            ci_path,
            "a KmipKeyProviderFactory table without a kmip_host option: DSE cannot tell which KMIP group (kmip_hosts entry) serves its key, and neither can this tool. Restore the SSTable (or this file) from a backup that has the option",
        )),
    }
}

/// True when a file is laid out in 4 KiB pages each ending in a valid CRC (FORMAT.md 2.6).
pub fn is_page_encrypted(path: &Path) -> Result<bool> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(path, "stat", e)),
    };
    let len = meta.len();
    if len == 0 || len % 4096 != 0 {
        return Ok(false);
    }
    let f = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut page = vec![0u8; 4096];
    for p in 0..len / 4096 {
        read_at(&f, path, p * 4096, &mut page)?;
        let stored = u32::from_be_bytes(page[4092..].try_into().unwrap());
        if crc32fast::hash(&page[..4092]) != stored {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads TOC, CompressionInfo and every chunk's key header. `fallback` is the key for header-less
/// chunks when the table names no `secret_key_file` (a replicated table's local-key chunks).
pub fn load(found: &Found, fallback: Option<&KeyId>) -> Result<Load> {
    load_with(found, fallback, None)
}

/// [`load`]; with `runs` (from a staging entry whose source is unchanged) the chunk table is
/// rebuilt from the runs, one header read per run, instead of reading every chunk's header.
pub fn load_with(
    found: &Found,
    fallback: Option<&KeyId>,
    runs: Option<&[ChunkRun]>,
) -> Result<Load> {
    let desc = &found.desc;
    let data_path = desc.data_path();
    desc.check_supported()?;
    // ScyllaDB names the key in Scylla.db and encrypts whole files below the format (its
    // uncompressed SSTables too: CRC.db instead of CompressionInfo.db).
    if found.present.iter().any(|c| c == "Scylla.db") {
        if let Some(s) = super::scylla::load(found, fallback)? {
            return Ok(Load::Scylla(Box::new(s)));
        }
    }
    let toc = read_toc(found)?;
    let data = File::open(&data_path).map_err(|e| Error::io(&data_path, "open", e))?;
    let data_len = data
        .metadata()
        .map_err(|e| Error::io(&data_path, "stat", e))?
        .len();
    let ci_path = desc.path("CompressionInfo.db");
    let ci_bytes = read_small(&ci_path, 1 << 30)?;
    let ci = CompressionInfo::parse(
        &ci_bytes,
        desc.has_max_compressed_length(),
        Some(data_len),
        &ci_path,
    )?;
    let Some(envelope) = envelope_of(&ci, &ci_path)? else {
        return Ok(Load::Unencrypted { class: ci.class });
    };
    let kmip_group = if envelope.provider == ProviderKind::Kmip {
        Some(table_kmip_group(&ci, &ci_path)?)
    } else {
        None
    };
    let mut keys = KeyTable {
        keys: Vec::new(),
        table_file: table_key_file(&ci)?,
        fallback: fallback.cloned(),
        kmip_group,
    };
    let headers = HeaderScan {
        data: &data,
        path: &data_path,
        data_len,
        ci: &ci,
        envelope: &envelope,
    };
    let chunks = match runs {
        Some(runs) => headers.by_runs(runs, &mut keys)?,
        None => headers.all(&mut keys)?,
    };
    let (paged, statistics) = if desc.format == Format::Bti {
        load_encrypted_indexes(found, &toc, &envelope, &mut keys)?
    } else {
        (Vec::new(), None)
    };
    Ok(Load::Encrypted(Box::new(Loaded {
        found: found.clone(),
        toc,
        ci,
        envelope,
        data_len,
        chunks,
        keys: keys.keys,
        paged,
        statistics,
    })))
}

/// The TOC, checked against the files present: every component it lists exists, and it lists
/// Data.db and CompressionInfo.db.
fn read_toc(found: &Found) -> Result<Vec<String>> {
    let desc = &found.desc;
    let toc_path = desc.path("TOC.txt");
    if !found.present.iter().any(|c| c == "TOC.txt") {
        return Err(Error::corrupt(
            &toc_path,
            "missing: every SSTable has a TOC.txt",
        ));
    }
    let toc = toc::read(&toc_path)?;
    for c in &toc {
        if !found.present.contains(c) {
            return Err(Error::corrupt(
                &toc_path,
                format!("lists {c}, but {} is missing", desc.path(c).display()),
            ));
        }
    }
    for c in ["Data.db", "CompressionInfo.db"] {
        if !toc.iter().any(|x| x == c) {
            return Err(Error::corrupt(
                &toc_path,
                format!("does not list {c}: not a compressed SSTable"),
            ));
        }
    }
    Ok(toc)
}

/// Reads the key header of every Data.db chunk (without decrypting anything).
struct HeaderScan<'a> {
    data: &'a File,
    path: &'a Path,
    data_len: u64,
    ci: &'a CompressionInfo,
    envelope: &'a Envelope,
}

impl HeaderScan<'_> {
    /// Every chunk's key (interned in `keys`), header length and length. Headers are read in
    /// parallel, a block of chunks at a time (a read per chunk is syscall bound), then interned
    /// in order so that errors name the first bad chunk.
    fn all(&self, keys: &mut KeyTable) -> Result<Vec<ChunkMeta>> {
        let n = self.ci.chunk_count();
        let mut chunks = Vec::with_capacity(n);
        for block in (0..n).step_by(SCAN_BLOCK) {
            let scanned: Vec<_> = (block..(block + SCAN_BLOCK).min(n))
                .into_par_iter()
                .map_init(Vec::new, |buf, i| self.one(i, buf))
                .collect();
            for (k, r) in scanned.into_iter().enumerate() {
                let i = block + k;
                let meta = match r? {
                    (None, len) => ChunkMeta {
                        key: RAW,
                        header_len: 0,
                        len,
                    },
                    (Some((header, header_len)), len) => ChunkMeta {
                        key: keys
                            .index(header, || format!("{}: chunk {i}", self.path.display()))?,
                        header_len: header_len as u32,
                        len,
                    },
                };
                chunks.push(meta);
            }
        }
        Ok(chunks)
    }

    /// The chunk table from `runs`: lengths from CompressionInfo, and each run's key header read
    /// from its first chunk. Runs that do not tile the chunks, or disagree with what is read, are
    /// an error (the caller's source check makes that a corrupt or changed file).
    fn by_runs(&self, runs: &[ChunkRun], keys: &mut KeyTable) -> Result<Vec<ChunkMeta>> {
        let n = self.ci.chunk_count();
        let mut chunks = Vec::with_capacity(n);
        let mut buf = Vec::new();
        for r in runs {
            if r.first != chunks.len() || r.count == 0 || r.first + r.count > n {
                return Err(Error::corrupt(self.path, STAGED_RUNS_DAMAGED));
            }
            let (head, _) = self.one(r.first, &mut buf)?;
            let (key, header_len) = match (head, r.raw) {
                (None, true) => (RAW, 0),
                (Some((header, hlen)), false) => (
                    keys.index(header, || {
                        format!("{}: chunk {}", self.path.display(), r.first)
                    })?,
                    hlen as u32,
                ),
                _ => {
                    return Err(Error::corrupt(
                        self.path,
                        format!("chunk {}: {STAGED_RUNS_DAMAGED}", r.first),
                    ))
                }
            };
            for i in r.first..r.first + r.count {
                let (start, end) = self.ci.chunk_range(i, self.data_len);
                chunks.push(ChunkMeta {
                    key,
                    header_len,
                    len: (end - start) as u32,
                });
            }
        }
        if chunks.len() != n {
            return Err(Error::corrupt(self.path, STAGED_RUNS_DAMAGED));
        }
        Ok(chunks)
    }

    /// One chunk's key header and length; no header for a chunk the writer stored raw.
    fn one(&self, i: usize, buf: &mut Vec<u8>) -> Result<(Option<(KeyHeader, usize)>, u32)> {
        let (ci, envelope) = (self.ci, self.envelope);
        let (start, end) = ci.chunk_range(i, self.data_len);
        let len = end - start;
        if len > u32::MAX as u64 / 2 {
            return Err(Error::corrupt(
                self.path,
                format!("chunk {i}: length {len} is absurd"),
            ));
        }
        if ci.max_compressed_length.is_some() && len >= ci.max_len() {
            return Ok((None, len as u32));
        }
        let prefix = if matches!(envelope.class, ChunkClass::Chained(_)) {
            4
        } else {
            0
        };
        let want = (len as usize).min(prefix + 5 + MAX_KMIP_ID_LEN + 64);
        buf.resize(512, 0);
        let head = &mut buf[..want.min(512)];
        read_at(self.data, self.path, start, head)?;
        let mut parsed = KeyHeader::parse(envelope.provider, head.get(prefix..).unwrap_or(&[]));
        if let Err(_) | Ok((KeyHeader::Kmip(_), _)) = &parsed {
            // An id longer than what was read: read the whole chunk prefix it claims.
            if envelope.provider == ProviderKind::Kmip && head.len() >= prefix + 5 {
                let n = i32::from_be_bytes(head[prefix + 1..prefix + 5].try_into().unwrap());
                if n >= 0
                    && (prefix + 5 + n as usize) as u64 <= len
                    && prefix + 5 + n as usize > head.len()
                {
                    let mut big = vec![0u8; prefix + 5 + n as usize];
                    read_at(self.data, self.path, start, &mut big)?;
                    parsed = KeyHeader::parse(envelope.provider, &big[prefix..]);
                }
            }
        }
        let parsed = parsed.map_err(|m| {
            let hint = raw_last_chunk_hint(ci, i, len);
            Error::corrupt(self.path, format!("chunk {i} at offset {start}: {m}{hint}"))
        })?;
        Ok((Some(parsed), len as u32))
    }
}

/// Interns the keys records name; a header-less record is under the table's key file, a KMIP
/// header's id is in the table's group.
struct KeyTable {
    keys: Vec<KeyId>,
    table_file: Option<KeyId>,
    fallback: Option<KeyId>,
    kmip_group: Option<String>,
}

impl KeyTable {
    fn index(&mut self, header: KeyHeader, what: impl Fn() -> String) -> Result<u32> {
        let id = match header {
            KeyHeader::Kmip(id) => KeyId::Kmip {
                // KMIP headers are parsed only for KMIP-provider tables, whose group load() has.
                group: self.kmip_group.clone().ok_or_else(|| Error::Unsupported {
                    path: std::path::PathBuf::from(what()),
                    msg: "a KMIP key header in a table naming no kmip_host".into(),
                })?,
                id,
            },
            KeyHeader::Replicated(u) => KeyId::Replicated(u),
            KeyHeader::None => match (&self.table_file, &self.fallback) {
                (Some(f), _) | (None, Some(f)) => f.clone(),
                (None, None) => {
                    // Per SSTable, not a configuration error: other SSTables go on.
                    return Err(Error::Unsupported {
                        path: std::path::PathBuf::from(what()),
                        msg: "no key header, and the table names no secret_key_file: DSE reads such records with the local key; name that key file with --from file:PATH (rekey) or --key file:PATH (verify)".into(),
                    });
                }
            },
        };
        Ok(match self.keys.iter().position(|x| *x == id) {
            Some(k) => k as u32,
            None => {
                self.keys.push(id);
                self.keys.len() as u32 - 1
            }
        })
    }
}

/// Scans a BTI SSTable's Partitions.db/Rows.db for encrypted pages and, when they are encrypted,
/// its Statistics.db components (FORMAT.md 2.6). Detection is per file, never by version alone.
fn load_encrypted_indexes(
    found: &Found,
    toc: &[String],
    envelope: &Envelope,
    keys: &mut KeyTable,
) -> Result<(Vec<PagedFile>, Option<Vec<StatsComponent>>)> {
    let desc = &found.desc;
    let mut paged = Vec::new();
    let mut plain_index = Vec::new();
    for comp in ["Partitions.db", "Rows.db"] {
        if !toc.iter().any(|c| c == comp) {
            continue;
        }
        let path = desc.path(comp);
        // DSE/HCD versions past `aa` encrypt the index files of every encrypted table: there, a
        // file of whole pages none of whose CRCs match is corrupt, not plain. (Apache `da` is plain.)
        let expect_pages = desc.may_encrypt_indexes() && desc.version != "da";
        match scan_pages(&path, envelope, keys, expect_pages)? {
            Some(pages) => paged.push(PagedFile {
                component: comp.to_string(),
                pages,
            }),
            None => {
                let len = std::fs::metadata(&path)
                    .map_err(|e| Error::io(&path, "stat", e))?
                    .len();
                if len > 0 {
                    plain_index.push(comp);
                }
            }
        }
    }
    if paged.is_empty() {
        return Ok((paged, None));
    }
    if let Some(c) = plain_index.first() {
        return Err(Error::corrupt(
            desc.path(c),
            "not page-encrypted while the other index file is: inconsistent SSTable, refusing to guess",
        ));
    }
    // DSE encrypts indices from version `b` and metadata from `ba` (HCD `ab` likewise).
    if desc.version == "b" || !toc.iter().any(|c| c == "Statistics.db") {
        return Ok((paged, None));
    }
    let path = desc.path("Statistics.db");
    let buf = read_small(&path, 256 << 20)?;
    let mut comps = Vec::new();
    for (kind, body) in statistics::split(&buf, &path)? {
        let opened = envelope
            .open_record(None, &body)
            .map_err(|m| Error::corrupt(&path, format!("component {kind}: {m}")))?;
        if opened.ciphertext.is_empty() || opened.ciphertext.len() % 16 != 0 {
            return Err(Error::corrupt(
                &path,
                format!("component {kind}: {} bytes of ciphertext, not a positive multiple of 16: not encrypted as the index files are", opened.ciphertext.len()),
            ));
        }
        let key = keys.index(opened.header, || {
            format!("{} component {kind}", path.display())
        })?;
        comps.push(StatsComponent { kind, key, body });
    }
    Ok((paged, Some(comps)))
}

/// `Some(pages)` when the file is page-encrypted; `None` when it is plain. A file of whole pages
/// whose CRC footers are valid on some pages but not all is corrupt, not plain.
fn scan_pages(
    path: &Path,
    envelope: &Envelope,
    keys: &mut KeyTable,
    expect_pages: bool,
) -> Result<Option<Vec<ChunkMeta>>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, "open", e)),
    };
    let len = f.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
    if len == 0 || len % PAGE as u64 != 0 {
        return Ok(None);
    }
    let n = (len / PAGE as u64) as usize;
    let mut page = vec![0u8; PAGE];
    let mut valid = 0;
    for i in 0..n {
        read_at(&f, path, (i * PAGE) as u64, &mut page)?;
        valid += pages::crc_ok(&page) as usize;
    }
    if valid == 0 && !expect_pages {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        read_at(&f, path, (i * PAGE) as u64, &mut page)?;
        let blob = pages::open_page(&page, i, path)?;
        let opened = envelope
            .open_record(None, blob)
            .map_err(|m| Error::corrupt(path, format!("page {i}: {m}")))?;
        let header_len = opened.header_len as u32;
        let key = keys.index(opened.header, || format!("{} page {i}", path.display()))?;
        out.push(ChunkMeta {
            key,
            header_len,
            len: blob.len() as u32,
        });
    }
    Ok(Some(out))
}

/// The key an SSTable is rekeyed to, and how records under it are labelled.
#[derive(Debug, Clone)]
pub struct Target {
    pub kref: KeyRef,
    pub id: KeyId,
    pub header: KeyHeader,
    pub provider: ProviderKind,
}

impl Target {
    pub fn new(kref: &KeyRef) -> Result<Target> {
        let (header, provider) = match kref {
            KeyRef::File(_) => (KeyHeader::None, ProviderKind::Local),
            KeyRef::Kmip { id, .. } => {
                if id.len() > MAX_KMIP_ID_LEN {
                    return Err(Error::Usage(format!(
                        "KMIP key id of {} bytes: DSE refuses ids longer than {MAX_KMIP_ID_LEN}",
                        id.len()
                    )));
                }
                (KeyHeader::Kmip(id.clone()), ProviderKind::Kmip)
            }
            KeyRef::Replicated(_) => {
                return Err(Error::Usage(
                    "replicated keys can only be read: rekey --to a key file (file:PATH) or a KMIP key (kmip://GROUP/ID)".into(),
                ))
            }
        };
        Ok(Target {
            kref: kref.clone(),
            id: kref.id()?,
            header,
            provider,
        })
    }

    /// The CompressionInfo options naming this key's provider (FORMAT.md 2.1); others carried over.
    pub fn rewrite_options(&self, ci: &mut CompressionInfo) {
        let opt = if ci.option("key_provider").is_none()
            && ci.option("secret_key_provider_factory_class").is_some()
        {
            "secret_key_provider_factory_class"
        } else {
            "key_provider"
        };
        let qualified = ci
            .option(opt)
            .is_some_and(|v| v.starts_with(PROVIDER_PACKAGE));
        let name = if qualified {
            format!("{PROVIDER_PACKAGE}{}", self.provider.factory_name())
        } else {
            self.provider.factory_name().to_string()
        };
        ci.set_option(opt, &name);
        // The key file by the path `Target::new` resolved.
        match &self.id {
            KeyId::File(p) => {
                ci.set_option("secret_key_file", &p.to_string_lossy());
                ci.remove_option("kmip_host");
            }
            KeyId::Kmip { group, .. } => {
                ci.set_option("kmip_host", group);
                ci.remove_option("secret_key_file");
            }
            KeyId::Replicated(_) => unreachable!("refused in Target::new"),
        }
    }
}

/// New chunk lengths and offsets, computable before any encryption: only the header changes.
pub fn new_layout(
    l: &Loaded,
    target: &Target,
    target_idx: Option<u32>,
) -> Result<(Vec<u32>, Vec<u64>)> {
    let new_hl = target.header.encoded_len() as u32;
    let max_len = l.ci.max_len();
    let mut lens = Vec::with_capacity(l.chunks.len());
    let mut offsets = Vec::with_capacity(l.chunks.len());
    let mut pos = 0u64;
    for (i, c) in l.chunks.iter().enumerate() {
        let n = if c.key == RAW || Some(c.key) == target_idx {
            c.len
        } else {
            let n = c.len - c.header_len + new_hl;
            // Every reader takes a chunk of maxCompressedLength or more for plaintext (FORMAT.md 2.3).
            if l.ci.max_compressed_length.is_some() && n as u64 >= max_len {
                return Err(Error::unsupported(
                    l.found.desc.data_path(),
                    format!(
                        "chunk {i} would grow to {n} bytes under the new key header, reaching maxCompressedLength {max_len}; readers would take it for plaintext. Use a KMIP key with a shorter id, or rewrite this table with nodetool upgradesstables"
                    ),
                ));
            }
            n
        };
        offsets.push(pos);
        lens.push(n);
        pos += n as u64 + 4;
    }
    Ok((lens, offsets))
}

pub fn sum_new_len(lens: &[u32]) -> u64 {
    lens.iter().map(|&n| n as u64 + 4).sum()
}

/// The `ALTER TABLE` each live table will need so that new writes use the new key, from its
/// SSTables' options as the rewrite will set them (one per table), known before the rewrite.
pub fn alter_statements(jobs: &[Job], target: &Target) -> HashMap<String, String> {
    let mut statements = HashMap::new();
    for j in jobs
        .iter()
        .filter(|j| j.loaded.found.location == crate::rekey::find::Location::Live)
    {
        let mut ci = j.loaded.ci.clone();
        target.rewrite_options(&mut ci);
        if let Some(stmt) = alter_statement(&j.report.table, &ci) {
            statements.entry(j.report.table.clone()).or_insert(stmt);
        }
    }
    statements
}
