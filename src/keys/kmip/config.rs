//! Where the KMIP servers are and how to authenticate to them.
//!
//! Three sources, one per run:
//! - `--kmip-config FILE`, TOML of exactly this shape (other tooling writes it):
//!   `[groups.NAME] hosts = ["h1:5696", ...]  ca = PEM  cert = PEM  key = PEM  timeout_ms = 5000`;
//! - `--scylla-yaml FILE`: `kmip_hosts.NAME` with `hosts`, `certificate`, `keyfile`, `truststore` (PEM);
//! - `--dse-yaml FILE`: `kmip_hosts.NAME` with `hosts`, `keystore_path`/`keystore_type`,
//!   `truststore_path`/`truststore_type`, `timeout`. DSE keeps these in JKS or PKCS#12 keystores;
//!   PEM files named there are used as they are, keystores get the exact commands to convert them.
//!
//! Relative paths are relative to the file that names them. No password is ever read from the
//! command line.

use crate::keys::Unreadable;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::error::KmipError;

/// DSE's and ScyllaDB's default when no timeout is configured (ms).
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// One `kmip_hosts` group: hosts tried in order, and the PEM files of the TLS identity.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub name: String,
    pub hosts: Vec<String>,
    /// The CA certificate(s) that must have issued the server's certificate.
    pub ca: PathBuf,
    /// The client certificate (chain) and its private key.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub timeout: Duration,
    /// Where this group was configured, for messages.
    pub origin: String,
}

/// Every configured group.
#[derive(Debug, Clone)]
pub struct KmipConfig {
    pub groups: BTreeMap<String, GroupConfig>,
    pub origin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    groups: BTreeMap<String, TomlGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlGroup {
    hosts: Vec<String>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    timeout_ms: Option<u64>,
}

fn read_text(path: &Path, what: &str) -> Result<String, KmipError> {
    // A regular file only (a FIFO would block the run forever).
    let (_, bytes) =
        crate::keys::read_regular(path, what, 4 << 20).map_err(|e| KmipError::Config(e.into()))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| KmipError::Config(format!("{what} {}: not UTF-8 text", path.display())))
}

fn relative_to(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

impl KmipConfig {
    pub fn group(&self, name: &str) -> Result<&GroupConfig, KmipError> {
        self.groups.get(name).ok_or_else(|| {
            KmipError::Config(format!(
                "KMIP group {name:?} is not in {} (it has: {})",
                self.origin,
                if self.groups.is_empty() {
                    "no groups".to_string()
                } else {
                    self.groups.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        })
    }

    /// `--kmip-config FILE`.
    pub fn from_toml_file(path: &Path) -> Result<KmipConfig, KmipError> {
        let text = read_text(path, "KMIP config")?;
        Self::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<KmipConfig, KmipError> {
        let origin = format!("--kmip-config {}", path.display());
        let f: TomlFile = toml::from_str(text).map_err(|e| {
            KmipError::Config(format!(
                "{origin}: {}; expected [groups.NAME] with hosts = [\"host:5696\", ...], ca, cert, key (PEM files) and timeout_ms",
                e.to_string().trim_end()
            ))
        })?;
        let mut groups = BTreeMap::new();
        for (name, g) in f.groups {
            if g.hosts.is_empty() {
                return Err(KmipError::Config(format!(
                    "{origin}: groups.{name}.hosts is empty"
                )));
            }
            let timeout_ms = g.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
            if timeout_ms == 0 {
                return Err(KmipError::Config(format!(
                    "{origin}: groups.{name}.timeout_ms must be above 0"
                )));
            }
            groups.insert(
                name.clone(),
                GroupConfig {
                    origin: format!("{origin} [groups.{name}]"),
                    name,
                    hosts: g.hosts,
                    ca: relative_to(path, &g.ca),
                    cert: relative_to(path, &g.cert),
                    key: relative_to(path, &g.key),
                    timeout: Duration::from_millis(timeout_ms),
                },
            );
        }
        Ok(KmipConfig { groups, origin })
    }

    /// `--scylla-yaml FILE` (PEM files) or `--dse-yaml FILE` (keystores).
    pub fn from_yaml_file(path: &Path, dse: bool) -> Result<KmipConfig, KmipError> {
        let text = read_text(path, if dse { "dse.yaml" } else { "scylla.yaml" })?;
        Self::from_yaml(&text, path, dse)
    }

    pub fn from_yaml(text: &str, path: &Path, dse: bool) -> Result<KmipConfig, KmipError> {
        use yaml_rust2::{Yaml, YamlLoader};
        let origin = format!(
            "{} {}",
            if dse { "--dse-yaml" } else { "--scylla-yaml" },
            path.display()
        );
        let docs = YamlLoader::load_from_str(text)
            .map_err(|e| KmipError::Config(format!("{origin}: not YAML: {e}")))?;
        let Some(doc) = docs.first() else {
            return Err(KmipError::Config(format!("{origin}: empty")));
        };
        let hosts = match &doc["kmip_hosts"] {
            Yaml::Hash(h) => h,
            _ => {
                return Err(KmipError::Config(format!(
                    "{origin}: no kmip_hosts section"
                )))
            }
        };
        let scalar = |y: &Yaml| -> Option<String> {
            match y {
                Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
                Yaml::Integer(i) => Some(i.to_string()),
                _ => None,
            }
        };
        let mut groups = BTreeMap::new();
        for (k, g) in hosts {
            let Some(name) = scalar(k) else { continue };
            let at = format!("{origin} kmip_hosts.{name}");
            let field = |f: &str| scalar(&g[f]);
            let need = |f: &str| field(f).ok_or_else(|| KmipError::Config(format!("{at}: no {f}")));
            let host_list: Vec<String> = match &g["hosts"] {
                Yaml::Array(a) => a.iter().filter_map(scalar).collect(),
                y => scalar(y)
                    .map(|s| {
                        s.split(',')
                            .map(|h| h.trim().to_string())
                            .filter(|h| !h.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            if host_list.is_empty() {
                return Err(KmipError::Config(format!("{at}: no hosts")));
            }
            let timeout_ms = match field("timeout") {
                Some(t) => t
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| {
                        KmipError::Config(format!(
                            "{at}: timeout {t:?} is not a positive number of ms"
                        ))
                    })?,
                None => DEFAULT_TIMEOUT_MS,
            };
            let (ca, cert, key) = if dse {
                dse_identity(&at, path, &field)?
            } else {
                (
                    need("truststore")?.into(),
                    need("certificate")?.into(),
                    need("keyfile")?.into(),
                )
            };
            let ca: PathBuf = ca;
            groups.insert(
                name.clone(),
                GroupConfig {
                    origin: at,
                    name,
                    hosts: host_list,
                    ca: relative_to(path, &ca),
                    cert: relative_to(path, &cert),
                    key: relative_to(path, &key),
                    timeout: Duration::from_millis(timeout_ms),
                },
            );
        }
        Ok(KmipConfig { groups, origin })
    }
}

/// DSE names keystores. PEM ones (`keystore_type: PEM`, as some sites use with a separate
/// `keyfile`) are used directly; JKS and PKCS#12 get the commands that make PEM files of them.
fn dse_identity(
    at: &str,
    yaml: &Path,
    field: &dyn Fn(&str) -> Option<String>,
) -> Result<(PathBuf, PathBuf, PathBuf), KmipError> {
    let ks = field("keystore_path")
        .ok_or_else(|| KmipError::Config(format!("{at}: no keystore_path")))?;
    let ts = field("truststore_path")
        .ok_or_else(|| KmipError::Config(format!("{at}: no truststore_path")))?;
    let ks_type = field("keystore_type").unwrap_or_else(|| "jks".into());
    let ts_type = field("truststore_type").unwrap_or_else(|| "jks".into());
    let pem = |t: &str| t.eq_ignore_ascii_case("pem");
    if pem(&ks_type) && pem(&ts_type) {
        let key = field("keyfile").unwrap_or_else(|| ks.clone());
        return Ok((ts.into(), ks.into(), key.into()));
    }
    let group = at.rsplit('.').next().unwrap_or("GROUP");
    let dir = yaml
        .parent()
        .unwrap_or(Path::new("."))
        .display()
        .to_string();
    let mut cmds = Vec::new();
    let mut p12 = ks.clone();
    if ks_type.eq_ignore_ascii_case("jks") {
        p12 = format!("{dir}/kmip-{group}-client.p12");
        cmds.push(format!(
            "keytool -importkeystore -srckeystore {ks} -srcstoretype JKS -destkeystore {p12} -deststoretype PKCS12"
        ));
    }
    if !pem(&ks_type) {
        cmds.push(format!(
            "openssl pkcs12 -in {p12} -clcerts -nokeys -out {dir}/kmip-{group}-client.pem"
        ));
        cmds.push(format!(
            "openssl pkcs12 -in {p12} -nocerts -nodes -out {dir}/kmip-{group}-client.key && chmod 600 {dir}/kmip-{group}-client.key"
        ));
    }
    if ts_type.eq_ignore_ascii_case("jks") {
        cmds.push(format!(
            "keytool -list -keystore {ts}   # find the CA's alias, then:\n    keytool -exportcert -rfc -keystore {ts} -alias CA_ALIAS -file {dir}/kmip-{group}-ca.pem"
        ));
    } else if !pem(&ts_type) {
        cmds.push(format!(
            "openssl pkcs12 -in {ts} -nokeys -out {dir}/kmip-{group}-ca.pem"
        ));
    }
    Err(KmipError::Config(format!(
        "{at}: the client identity is in a {ks_type} keystore and the CA in a {ts_type} truststore; sstable-rekey reads PEM files. Convert them once (each command asks for the store's password; add -legacy to openssl 3 for stores made by old Java versions):\n    {}\nthen pass a --kmip-config file:\n    [groups.{group}]\n    hosts = [...]   # from dse.yaml\n    ca = \"{dir}/kmip-{group}-ca.pem\"\n    cert = \"{dir}/kmip-{group}-client.pem\"\n    key = \"{dir}/kmip-{group}-client.key\"\n    timeout_ms = 5000",
        cmds.join("\n    ")
    )))
}

impl GroupConfig {
    /// The rustls configuration: TLS 1.3 and 1.2, the server verified against `ca` and the host
    /// name or IP address it was reached by, our certificate and key (ECDSA, RSA or Ed25519 PEM).
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, KmipError> {
        let cfg = |m: String| KmipError::Config(format!("{}: {m}", self.origin));
        let ca_text = read_text(&self.ca, "CA file").map_err(|e| cfg(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_text.as_bytes()) {
            let c = c.map_err(|e| cfg(format!("ca {}: {e}", self.ca.display())))?;
            roots
                .add(c)
                .map_err(|e| cfg(format!("ca {}: {e}", self.ca.display())))?;
        }
        if roots.is_empty() {
            return Err(cfg(format!(
                "ca {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                self.ca.display()
            )));
        }
        let cert_text = read_text(&self.cert, "certificate").map_err(|e| cfg(e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(cert_text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cfg(format!("cert {}: {e}", self.cert.display())))?;
        if chain.is_empty() {
            return Err(cfg(format!(
                "cert {}: no PEM certificate in it",
                self.cert.display()
            )));
        }
        let key = load_private_key(&self.key).map_err(|e| cfg(e.into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| cfg(format!("ca {}: {e}", self.ca.display())))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| cfg(e.to_string()))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                cfg(format!(
                    "cert {} / key {}: {e} (do they belong together?)",
                    self.cert.display(),
                    self.key.display()
                ))
            })?;
        Ok(Arc::new(config))
    }
}

/// The client's private key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA) PEM, not readable by others.
fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Unreadable> {
    use std::os::unix::fs::PermissionsExt;
    let (meta, text) = crate::keys::read_regular(path, "key", 1 << 20)?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(Unreadable(format!(
            "key {}: readable by every user; run `chmod 600 {}` (or 640 with a trusted group)",
            path.display(),
            path.display()
        )));
    }
    if text.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(Unreadable(format!(
            "key {}: the private key is encrypted; make an unencrypted copy readable only by this user: openssl pkey -in {} -out client-plain.key && chmod 600 client-plain.key",
            path.display(),
            path.display()
        )));
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        Unreadable(format!(
            "key {}: no PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY) in it: {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_of_the_documented_shape() {
        let c = KmipConfig::from_toml(
            r#"
[groups.kmip1]
hosts = ["kms1.example:5696", "kms2.example:5696"]   # tried in order
ca = "/etc/cassandra/kmip/ca.pem"
cert = "/etc/cassandra/kmip/client.pem"
key = "client.key"
timeout_ms = 5000
"#,
            Path::new("/etc/x/kmip.toml"),
        )
        .unwrap();
        let g = c.group("kmip1").unwrap();
        assert_eq!(g.hosts, ["kms1.example:5696", "kms2.example:5696"]);
        assert_eq!(g.key, Path::new("/etc/x/client.key"));
        assert_eq!(g.timeout, Duration::from_millis(5000));
        let e = c.group("other").unwrap_err().to_string();
        assert!(e.contains("kmip1"), "{e}");
        // Typos are refused, not ignored.
        let e = KmipConfig::from_toml(
            "[groups.a]\nhosts=[\"h\"]\nca=\"c\"\ncert=\"c\"\nkey=\"k\"\ntimeout=5\n",
            Path::new("k.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn scylla_yaml() {
        let c = KmipConfig::from_yaml(
            "cluster_name: x\nkmip_hosts:\n  kmip1:\n    hosts: kms1:5696, kms2\n    certificate: /k/client.pem\n    keyfile: /k/client.key\n    truststore: /k/ca.pem\n",
            Path::new("/etc/scylla/scylla.yaml"),
            false,
        )
        .unwrap();
        let g = c.group("kmip1").unwrap();
        assert_eq!(g.hosts, ["kms1:5696", "kms2"]);
        assert_eq!(g.ca, Path::new("/k/ca.pem"));
    }

    #[test]
    fn dse_yaml_keystores_get_conversion_commands() {
        let e = KmipConfig::from_yaml(
            "kmip_hosts:\n  kmip1:\n    hosts: kms1, kms2\n    keystore_path: /etc/dse/conf/KMIP_keystore.jks\n    keystore_type: jks\n    keystore_password: secret-ks\n    truststore_path: /etc/dse/conf/KMIP_truststore.jks\n    truststore_type: jks\n    truststore_password: secret-ts\n    timeout: 1000\n",
            Path::new("/etc/dse/dse.yaml"),
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("keytool -importkeystore -srckeystore /etc/dse/conf/KMIP_keystore.jks"),
            "{e}"
        );
        assert!(
            e.contains("openssl pkcs12 -in /etc/dse/kmip-kmip1-client.p12 -nocerts -nodes"),
            "{e}"
        );
        assert!(
            e.contains("keytool -exportcert -rfc -keystore /etc/dse/conf/KMIP_truststore.jks"),
            "{e}"
        );
        assert!(!e.contains("secret"), "passwords must not be echoed: {e}");
    }
}
