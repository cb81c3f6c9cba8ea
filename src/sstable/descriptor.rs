//! SSTable file names: `<version>-<id>-<format>-<Component>` (FORMAT.md 1.1).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Big,
    Bti,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Big => "big",
            Format::Bti => "bti",
        }
    }
}

/// The generation id: an integer, or (from 4.1) a time-UUID rendered in base 36.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Generation {
    Int(u64),
    Uuid(String),
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Generation::Int(n) => write!(f, "{n}"),
            Generation::Uuid(s) => f.write_str(s),
        }
    }
}

impl Generation {
    pub fn parse(s: &str) -> Option<Generation> {
        if !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().ok().map(Generation::Int);
        }
        // dddd_ssss_nnnnnLLLLLLLLLLLLL (Cassandra's UUIDBasedSSTableId)
        let b = s.as_bytes();
        let ok = b.len() == 28
            && b[4] == b'_'
            && b[9] == b'_'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 9 || c.is_ascii_digit() || c.is_ascii_lowercase());
        ok.then(|| Generation::Uuid(s.to_string()))
    }

    /// A new time-UUID style id for now, with random low bits (Cassandra's UUIDBasedSSTableId).
    pub fn new_uuid_style() -> Result<Generation> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| Error::Usage(format!("system clock before 1970: {e}")))?;
        // 100-ns intervals since 1582-10-15, the UUID v1 epoch.
        const GREGORIAN_OFFSET: u128 = 0x01B2_1DD2_1381_4000;
        let ts = now.as_nanos() / 100 + GREGORIAN_OFFSET;
        let per_sec: u128 = 10_000_000;
        let secs = ts / per_sec;
        let day = secs / 86_400;
        let sec_of_day = secs % 86_400;
        let rem = ts % per_sec;
        let mut lsb = [0u8; 8];
        crate::crypto::random::fill(&mut lsb)?;
        let lsb = u64::from_be_bytes(lsb);
        let s = format!(
            "{}_{}_{}{}",
            base36(day as u64, 4),
            base36(sec_of_day as u64, 4),
            base36(rem as u64, 5),
            base36(lsb, 13)
        );
        Ok(Generation::Uuid(s))
    }
}

fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Versions this tool reads and writes. 2.x (`jb ka la lb`) use Adler32 and are refused.
pub const BIG_VERSIONS: &[&str] = &["ma", "mb", "mc", "md", "me", "na", "nb", "oa"];
/// BTI versions: Apache `da`, and DSE/HCD ones whose index files may be page-encrypted (FORMAT.md 2.6).
pub const BTI_VERSIONS: &[&str] = &[
    "aa", "ab", "ac", "ad", "b", "ba", "bb", "ca", "cb", "cc", "da",
];

/// One SSTable: its folder, version, generation and format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub dir: PathBuf,
    pub version: String,
    pub generation: Generation,
    pub format: Format,
}

impl Descriptor {
    /// Splits a component file name into its descriptor and component (`Data.db`, `TOC.txt`, ...).
    pub fn parse_file_name(dir: &Path, name: &str) -> Option<(Descriptor, String)> {
        let mut parts = name.splitn(4, '-');
        let version = parts.next()?;
        let id = parts.next()?;
        let format = match parts.next()? {
            "big" => Format::Big,
            "bti" => Format::Bti,
            _ => return None,
        };
        let component = parts.next()?;
        if version.is_empty()
            || version.len() > 2
            || !version.bytes().all(|b| b.is_ascii_lowercase())
            || component.is_empty()
        {
            return None;
        }
        let generation = Generation::parse(id)?;
        Some((
            Descriptor {
                dir: dir.to_path_buf(),
                version: version.to_string(),
                generation,
                format,
            },
            component.to_string(),
        ))
    }

    /// The descriptor of a `...-Data.db` path (or any component path).
    pub fn from_path(path: &Path) -> Result<(Descriptor, String)> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Usage(format!("{}: not an SSTable file name", path.display())))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self::parse_file_name(&dir, name).ok_or_else(|| {
            Error::Usage(format!(
                "{}: not an SSTable component name (<version>-<id>-<big|bti>-<Component>)",
                path.display()
            ))
        })
    }

    /// `nb-1-big-`: the prefix every component shares.
    pub fn prefix(&self) -> String {
        format!(
            "{}-{}-{}-",
            self.version,
            self.generation,
            self.format.as_str()
        )
    }

    pub fn path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{}{}", self.prefix(), component))
    }

    pub fn data_path(&self) -> PathBuf {
        self.path("Data.db")
    }

    pub fn with_generation(&self, generation: Generation) -> Descriptor {
        Descriptor {
            generation,
            ..self.clone()
        }
    }

    /// Why this tool cannot handle the version, if it cannot.
    pub fn check_supported(&self) -> Result<()> {
        let v = self.version.as_str();
        let known = match self.format {
            Format::Big => BIG_VERSIONS.contains(&v),
            Format::Bti => BTI_VERSIONS.contains(&v),
        };
        if known {
            return Ok(());
        }
        let why = if self.format == Format::Big && v < "ma" {
            format!("version {v} is Cassandra 2.x (Adler32 checksums); upgrade the SSTables with Cassandra first")
        } else {
            format!(
                "{} version {v} is not one this tool knows",
                self.format.as_str()
            )
        };
        Err(Error::unsupported(self.data_path(), why))
    }

    /// CompressionInfo.db carries maxCompressedLength for BIG `na`+ and every BTI (FORMAT.md 1.2).
    /// A plain string comparison is wrong for BTI (`"da" < "na"`): decide per format.
    pub fn has_max_compressed_length(&self) -> bool {
        match self.format {
            Format::Bti => true,
            Format::Big => self.version.as_str() >= "na",
        }
    }

    /// Cassandra 3.0/3.11 (`m*`) read transaction-log paths without the trailing `-` (CASSANDRA-13294).
    pub fn is_cassandra_3(&self) -> bool {
        self.format == Format::Big && self.version.starts_with('m')
    }

    /// Statistics.db has checksums (count, table of contents, components) from BIG `na` and in BTI.
    pub fn statistics_checksummed(&self) -> bool {
        self.has_max_compressed_length()
    }

    /// Versions in which DSE/HCD may encrypt Partitions.db/Rows.db pages and Statistics.db (FORMAT.md 2.6).
    pub fn may_encrypt_indexes(&self) -> bool {
        self.format == Format::Bti && !matches!(self.version.as_str(), "aa")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integer_and_uuid_names() {
        let (d, c) = Descriptor::parse_file_name(Path::new("/x"), "nb-12-big-Data.db").unwrap();
        assert_eq!(d.generation, Generation::Int(12));
        assert_eq!(c, "Data.db");
        assert_eq!(d.prefix(), "nb-12-big-");
        let (d, c) = Descriptor::parse_file_name(
            Path::new("/x"),
            "nb-3g1m_0nuf_3vj5m2k1125165rxa7-big-CompressionInfo.db",
        )
        .unwrap();
        assert!(matches!(d.generation, Generation::Uuid(_)));
        assert_eq!(c, "CompressionInfo.db");
        let (d, _) = Descriptor::parse_file_name(Path::new("/x"), "b-1-bti-Partitions.db").unwrap();
        assert_eq!(d.version, "b");
        assert!(Descriptor::parse_file_name(Path::new("/x"), "nb_txn_compaction_x.log").is_none());
        assert!(Descriptor::parse_file_name(Path::new("/x"), "nb-1-foo-Data.db").is_none());
    }

    #[test]
    fn new_uuid_ids_have_the_cassandra_shape() {
        let g = Generation::new_uuid_style().unwrap();
        let s = g.to_string();
        assert_eq!(Generation::parse(&s), Some(g));
        // days since 1582-10-15 in 2026 are about 162,000: "3g.." in base 36
        assert!(s.starts_with('3'), "{s}");
    }

    #[test]
    fn max_compressed_length_is_decided_per_format() {
        let d = |v: &str, f| Descriptor {
            dir: PathBuf::new(),
            version: v.into(),
            generation: Generation::Int(1),
            format: f,
        };
        assert!(!d("mc", Format::Big).has_max_compressed_length());
        assert!(d("na", Format::Big).has_max_compressed_length());
        assert!(d("da", Format::Bti).has_max_compressed_length());
        assert!(d("jb", Format::Big).check_supported().is_err());
        assert!(d("md", Format::Big).is_cassandra_3());
    }
}
