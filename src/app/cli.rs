//! Command-line definitions (clap derive). The names are a contract other tooling depends on.

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

const KEYREF_HELP: &str = "KEYREF forms:
  file:PATH           a DSE local key file (lines CIPHER:STRENGTH:BASE64KEY, mode 0600); the line is
                      chosen by each table's cipher_algorithm and secret_key_strength. As --to:
                      an absolute path, readable by the owner of the data files (the node's user)
  kmip://GROUP/ID     a KMIP key by unique identifier; GROUP is the kmip_hosts entry of dse.yaml
                      (a table's kmip_host). The same ID in another group is another key.
                      Fetched from the KMIP server given by --kmip-config/--dse-yaml/--scylla-yaml,
                      or offline through --keyring (by ID)
  kmip://GROUP/active (--to only) the Active AES key of the tables' strength (Locate), created
                      with --create-key when there is none
  replicated:UUID     (--from/--key only) a DSE replicated key, resolved through --keyring
Key material is never accepted on the command line. Key files and keyrings must be regular files.
A --to key whose bytes equal an old key's, or --to among the --from keys, is refused (exit 2).";

#[derive(Parser, Debug)]
#[command(
    name = "sstable-rekey",
    version,
    about = "Re-encrypt DSE/HCD encrypted SSTables offline, chunk by chunk, after a key compromise",
    long_about = "Re-encrypt DSE/HCD encrypted SSTables offline, chunk by chunk, after a key compromise.\n\n\
Procedure: back up; revoke the compromised key; stop the node; `sstable-rekey rekey --to NEW`; \
`sstable-rekey verify --key NEW` (exit 0 proves no live chunk is under any other key); start the node; \
run the printed ALTER TABLE; repeat on every node; only then destroy the old key.\n\n\
Exit status: 0 success, 1 some SSTable failed or (verify) is under another key, 2 usage, \
configuration or key error before any work, 130 interrupted.",
    after_help = KEYREF_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Re-encrypt every chunk of the selected SSTables under a new key, atomically per SSTable
    #[command(after_help = KEYREF_HELP)]
    Rekey(RekeyArgs),
    /// While the node serves: rewrite the SSTables into a staging folder, for the next rekey
    /// (node stopped) to commit in seconds
    #[command(
        long_about = "While the node serves: rewrite every selected SSTable still under an old key into <data_dir>/.sstable-rekey-staging/ (never touching a table folder), so that the `rekey` of the maintenance window only renames the staged files in (seconds, whatever the data size).

Procedure per node: `sstable-rekey stage --to NEW` (node running, throttled with --rate); then in the window: nodetool drain, stop the node, `sstable-rekey rekey --to NEW` (commits every staged copy whose source is unchanged, rewrites the rest), `sstable-rekey verify --key NEW`, start the node.

ScyllaDB SSTables are staged too: each encrypted component re-ciphered under the new key into the staging folder; the window's `rekey` renames them in and swaps by ScyllaDB's startup rules.

A killed stage leaves files only in the staging folder; the next stage (or the rekey) removes the incomplete entries; valid ones are kept. `stage --discard` removes the staging folders.",
        after_help = KEYREF_HELP
    )]
    Stage(StageArgs),
    /// Decrypt every chunk and prove which keys the live SSTables are under
    #[command(after_help = KEYREF_HELP)]
    Verify(VerifyArgs),
    /// Show version, class, options, chunks and the keys named in chunk headers (no key needed)
    Inspect(InspectArgs),
    /// Resolve leftover transaction logs the way Cassandra's startup does (like sstableutil --cleanup)
    Recover(RecoverArgs),
    /// Delete the old files a `rekey --purge-later` moved aside (safe while the node serves)
    #[command(
        long_about = "Delete the old files that the staged commits of a `rekey --purge-later` moved into <data_dir>/.sstable-rekey-obsolete/ (the replaced SSTables, still under the old key), then that folder.

Safe while the node serves: nothing in a table folder is touched, and the process runs at nice 10 and the lowest best-effort I/O priority (--ionice idle for the idle class). Only SSTable component files are deleted; anything else in the folder stops the purge with nothing deleted. Exit 0 when the folders are gone (or there were none)."
    )]
    Purge(PurgeArgs),
    /// Run inspect → rekey → verify on a scratch copy of the bundled demo data
    Demo(DemoArgs),
    /// Measure rekey throughput against baselines measured in the same run (openssl, cp, naive)
    #[command(
        long_about = "Measure rekey throughput against baselines measured in the same run.\n\n\
Writes encrypted SSTables of --size Data.db bytes in --dir (a scratch folder, deleted afterwards \
unless --keep), then measures: `openssl speed` AES-CBC on one core, `openssl enc` (CPU per GB), a \
naive single-stream rekey, and --runs interleaved rounds of `cp`, `cp` + `sync`, and \
`sstable-rekey rekey` with 1 thread, all threads, and all threads on the two-pass kernel. Prints \
medians, best runs, GB/s of Data.db, user CPU per GB, peak RSS and the ratios; --json for automation.\n\n\
On a real disk, point --dir at a folder on it (the rekey fsyncs, so compare with cp + sync); make \
sure it has room for twice --size. Examples:\n  \
sstable-rekey bench\n  \
sstable-rekey bench --bits 256 --runs 5\n  \
sstable-rekey bench --sstables 1000\n  \
sstable-rekey bench --dir /var/lib/cassandra/bench --json"
    )]
    Bench(BenchArgs),
    /// Manage keys on a KMIP server (like dsetool managekmip): list, create, revoke, destroy
    Kmip(KmipArgs),
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Folder for the generated SSTable: put it on the file system to measure (default: tmpfs /dev/shm)
    #[arg(long, value_name = "DIR", default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// Data.db bytes to generate (in all, split over --sstables)
    #[arg(long, default_value = "2GiB")]
    pub size: String,
    /// Chunk length in KiB
    #[arg(long, default_value_t = 16)]
    pub chunk_kib: u32,
    /// AES key size
    #[arg(long, default_value_t = 128, value_parser = clap::builder::PossibleValuesParser::new(["128", "192", "256"]).map(|s: String| s.parse::<u32>().unwrap()))]
    pub bits: u32,
    /// Threads for the all-threads run (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Runs per measure (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// Keep the generated data (and print where it is) instead of deleting it
    #[arg(long)]
    pub keep: bool,
    /// Split the data over this many SSTables (e.g. --size 2GiB --sstables 1000 for 2 MiB each)
    #[arg(long, default_value_t = 1)]
    pub sstables: usize,
    /// Also measure the staged path on the same data: `stage`, then the `rekey` that commits the
    /// staged copies (the maintenance window), against the offline rekey
    #[arg(long)]
    pub staged: bool,
    /// With --staged: also a `stage --rate MB/s` run, and how close it kept to the rate
    #[arg(long, value_name = "MB/s", requires = "staged")]
    pub stage_rate: Option<f64>,
    /// `scylla`: also measure the ScyllaDB rekey (whole files re-ciphered block by block) on a
    /// ScyllaDB table of the same size, against its `cp` and the DSE rekey of the same run
    #[arg(long, value_name = "VENDOR", default_value = "dse", value_parser = ["dse", "scylla"])]
    pub vendor: String,
}

/// Where the KMIP servers are. Passwords are never taken from the command line.
#[derive(Args, Debug, Default, Clone)]
pub struct KmipOpts {
    /// KMIP groups, TOML: [groups.NAME] hosts = ["host:5696", ...], ca, cert, key (PEM), timeout_ms
    #[arg(long, value_name = "FILE")]
    pub kmip_config: Option<PathBuf>,
    /// Use the kmip_hosts entries of this dse.yaml (PEM files; JKS/PKCS#12 keystores get the
    /// commands that convert them)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kmip_config", "scylla_yaml"])]
    pub dse_yaml: Option<PathBuf>,
    /// Use the kmip_hosts entries of this scylla.yaml (certificate, keyfile, truststore: PEM). Also
    /// read for its commit log and hints folders (verify, kmip destroy) and, by rekey, for
    /// user_info_encryption/system_info_encryption still naming a replaced key (the scylla.yaml
    /// change is printed). Without kmip_hosts, rekey, stage and verify use it for these only
    #[arg(long, value_name = "FILE", conflicts_with = "kmip_config")]
    pub scylla_yaml: Option<PathBuf>,
}

const DATA_DIR_SHORT: &str = "Cassandra data directory (repeatable); default: the data directories of the node's cassandra.yaml, else /var/lib/cassandra/data";

const DATA_DIR_HELP: &str = "Cassandra data directory (repeatable; the same folder twice is scanned once). \
Default: the data_file_directories (and local_system_data_file_directory) of the node's cassandra.yaml \
(--cassandra-yaml, else the first of $CASSANDRA_CONF/, $CASSANDRA_HOME/conf/, \
$DSE_HOME/resources/cassandra/conf/, $HCD_HOME/resources/cassandra/conf/, /etc/dse/cassandra/, /etc/dse/, \
/etc/hcd/cassandra/, /etc/hcd/, /etc/cassandra/ that has one), else /var/lib/cassandra/data. \
When a cassandra.yaml is found and --data-dir leaves out some of its data directories, verify and \
kmip destroy refuse to declare a key unused (exit 1) and rekey warns";

const CASSANDRA_YAML_SHORT: &str =
    "The node's cassandra.yaml (default: found at the standard places, named on stderr)";

const CASSANDRA_YAML_HELP: &str = "The node's cassandra.yaml: its data_file_directories are the data directories \
when --data-dir is not given, and the ones --data-dir must cover (default: found at the standard places; \
the file used is named on stderr)";

#[derive(Args, Debug)]
pub struct Scope {
    #[arg(long = "data-dir", value_name = "DIR", help = DATA_DIR_SHORT, long_help = DATA_DIR_HELP)]
    pub data_dirs: Vec<PathBuf>,
    #[arg(long, value_name = "PATH", help = CASSANDRA_YAML_SHORT, long_help = CASSANDRA_YAML_HELP)]
    pub cassandra_yaml: Option<PathBuf>,
    /// Offline keyring resolving kmip:// and replicated references: lines `<key id>:<base64 key>`, mode 0600
    #[arg(long, value_name = "PATH")]
    pub keyring: Option<PathBuf>,
    /// Write a JSON report here
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub kmip: KmipOpts,
    /// Keyspace to work on (all keyspaces when absent)
    pub keyspace: Option<String>,
    /// Tables of KEYSPACE (all its tables when absent)
    pub tables: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RekeyArgs {
    /// The new key
    #[arg(long, value_name = "KEYREF")]
    pub to: String,
    /// Only touch SSTables under these keys (default: every chunk not already under --to). A
    /// single file: key is also the key of header-less chunks of tables that name no key file
    #[arg(long, value_name = "KEYREF")]
    pub from: Vec<String>,
    /// SSTables rewritten at once (chunks are always parallel across all cores)
    #[arg(long, short = 'j', value_name = "N", default_value_t = 2)]
    pub jobs: usize,
    /// Plan and check keys and space, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// With --to kmip://GROUP/active: create and activate an AES key of the tables' strength when
    /// the group has no Active one
    #[arg(long)]
    pub create_key: bool,
    /// Let tables move to the KMIP group of --to from another group (their kmip_host), or from a
    /// local key file or replicated keys, without a KMIP configuration confirming that group. Offline (--keyring
    /// only) such a move is refused without it: a mistyped GROUP would be written into every new
    /// CompressionInfo as kmip_host, and no node could read the tables. Give it only when every
    /// node's dse.yaml has that kmip_hosts group
    #[arg(long)]
    pub move_kmip_group: bool,
    /// Rewrite every SSTable now: leave the staged copies of `stage` unused (they stay)
    #[arg(long)]
    pub ignore_staged: bool,
    /// Read every staged copy back and check its CRC32 against its manifest before committing it
    /// (by default the manifest's sizes and the fsyncs at staging are trusted); a copy that does
    /// not match is discarded and its SSTable rewritten now
    #[arg(long, conflicts_with = "ignore_staged")]
    pub verify_staged: bool,
    /// Leave the old files that staged commits replaced in <data_dir>/.sstable-rekey-obsolete/
    /// for `sstable-rekey purge` after the node is back up, instead of deleting them before
    /// exiting (freeing gigabytes can take longer than the commits themselves)
    #[arg(long)]
    pub purge_later: bool,
    /// No progress output
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub scope: Scope,
}

#[derive(Args, Debug)]
pub struct StageArgs {
    /// The new key (the same --to the rekey will be given)
    #[arg(long, value_name = "KEYREF", required_unless_present = "discard")]
    pub to: Option<String>,
    /// Only stage SSTables under these keys (default: every chunk not already under --to)
    #[arg(long, value_name = "KEYREF")]
    pub from: Vec<String>,
    /// SSTables staged at once
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// At most this many MB/s of reads plus writes (default: unthrottled)
    #[arg(long, value_name = "MB/s")]
    pub rate: Option<f64>,
    /// I/O priority: best-effort level 7 (`be`, default) or the idle class (`idle`); the CPU nice
    /// value is 10 either way
    #[arg(long, value_parser = ["be", "idle"], default_value = "be")]
    pub ionice: String,
    /// With --to kmip://GROUP/active: as for rekey
    #[arg(long)]
    pub create_key: bool,
    /// As for rekey
    #[arg(long)]
    pub move_kmip_group: bool,
    /// Remove the staging folders (every staged copy) and stop
    #[arg(long, conflicts_with_all = ["to", "from"])]
    pub discard: bool,
    /// No progress output
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub scope: Scope,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A key the SSTables may be under (repeatable); chunks under any other key fail verification
    #[arg(long = "key", value_name = "KEYREF", required = true)]
    pub keys: Vec<String>,
    /// Also decompress every chunk and check its length
    #[arg(long)]
    pub deep: bool,
    /// ScyllaDB commit log folder (repeatable; its sub-folders too): every segment whose side
    /// file names a key not given fails verification. Default with --scylla-yaml: its
    /// commitlog_directory (else <workdir>/commitlog, workdir /var/lib/scylla)
    #[arg(long = "commitlog-dir", value_name = "DIR")]
    pub commitlog_dirs: Vec<PathBuf>,
    /// ScyllaDB hints folder (repeatable; its per-host sub-folders too), checked as
    /// --commitlog-dir. Default with --scylla-yaml: its hints_directory and view_hints_directory
    /// (else <workdir>/hints, <workdir>/view_hints)
    #[arg(long = "hints-dir", value_name = "DIR")]
    pub hints_dirs: Vec<PathBuf>,
    #[command(flatten)]
    pub scope: Scope,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// A Data.db (or any component), an SSTable prefix such as .../nb-1-big-, or a table folder
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RecoverArgs {
    #[arg(long = "data-dir", value_name = "DIR", help = DATA_DIR_SHORT, long_help = DATA_DIR_HELP)]
    pub data_dirs: Vec<PathBuf>,
    #[arg(long, value_name = "PATH", help = CASSANDRA_YAML_SHORT, long_help = CASSANDRA_YAML_HELP)]
    pub cassandra_yaml: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PurgeArgs {
    #[arg(long = "data-dir", value_name = "DIR", help = DATA_DIR_SHORT, long_help = DATA_DIR_HELP)]
    pub data_dirs: Vec<PathBuf>,
    #[arg(long, value_name = "PATH", help = CASSANDRA_YAML_SHORT, long_help = CASSANDRA_YAML_HELP)]
    pub cassandra_yaml: Option<PathBuf>,
    /// I/O scheduling class: `be` (best effort, lowest level; default) or `idle`
    #[arg(long, value_name = "CLASS", default_value = "be", value_parser = ["be", "idle"])]
    pub ionice: String,
    /// Write a JSON report (what was deleted) to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to put the scratch copy (default: a new folder under the system temp dir)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct KmipArgs {
    #[command(subcommand)]
    pub command: KmipCommand,
}

#[derive(Subcommand, Debug)]
pub enum KmipCommand {
    /// List the keys of a group: ID, Name, Cipher, State, Activation Date, Creation Date, Protect
    /// Stop Date, Namespace (Object Group)
    List(KmipListArgs),
    /// Create an AES key and activate it
    Create(KmipCreateArgs),
    /// Revoke a key: Compromised (--reason compromise) or Deactivated; it still decrypts
    Revoke(KmipRevokeArgs),
    /// Destroy a key, after proving that no SSTable in --data-dir (snapshots and backups
    /// included) still has a chunk under it
    Destroy(KmipDestroyArgs),
}

#[derive(Args, Debug)]
pub struct KmipListArgs {
    /// The kmip_hosts group
    pub group: String,
    /// Only keys in this namespace (Object Group)
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Only keys with this Name (Locate by Name on the server)
    #[arg(long)]
    pub name: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kmip: KmipOpts,
}

#[derive(Args, Debug)]
pub struct KmipCreateArgs {
    /// The kmip_hosts group
    pub group: String,
    /// Key length
    #[arg(long, value_parser = ["128", "192", "256"])]
    pub bits: String,
    /// A Name attribute for the key
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub kmip: KmipOpts,
}

#[derive(Args, Debug)]
pub struct KmipRevokeArgs {
    /// The kmip_hosts group
    pub group: String,
    /// The key's unique identifier
    pub id: String,
    /// Why: compromise (the key becomes Compromised), superseded or cessation (Deactivated)
    #[arg(long, value_enum, default_value = "compromise")]
    pub reason: sstable_rekey::keys::kmip::RevokeReason,
    /// A Revocation Message stored with the key
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    #[command(flatten)]
    pub kmip: KmipOpts,
}

#[derive(Args, Debug)]
pub struct KmipDestroyArgs {
    /// The kmip_hosts group
    pub group: String,
    /// The key's unique identifier
    pub id: String,
    #[arg(long = "data-dir", value_name = "DIR", help = DATA_DIR_SHORT, long_help = DATA_DIR_HELP)]
    pub data_dirs: Vec<PathBuf>,
    #[arg(long, value_name = "PATH", help = CASSANDRA_YAML_SHORT, long_help = CASSANDRA_YAML_HELP)]
    pub cassandra_yaml: Option<PathBuf>,
    /// Destroy even if SSTables (live, snapshots or backups) are still under the key, or the
    /// check could not be made: their data becomes unreadable
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub kmip: KmipOpts,
}
