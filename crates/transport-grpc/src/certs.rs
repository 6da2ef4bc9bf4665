//! Certificates for a test cluster (feature `certs`): a CA, one certificate per node and
//! per client, each carrying its [lockstep identity](crate::identity). The `lockstep certs`
//! command writes them to a directory; tests use them in memory.
//!
//! ```
//! use lockstep_transport_grpc::certs::{generate, CertsSpec};
//!
//! let certs = generate(&CertsSpec::new("demo", [1, 2, 3]).with_clients(["ops"])).unwrap();
//! let tls = certs.node_tls(1, true).unwrap(); // a TlsConfig for node 1, mutual TLS
//! assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! ```
//!
//! The keys are ECDSA P-256, the certificates do not expire for practical purposes and the
//! CA key is written next to them: these are for test and development clusters. A
//! production cluster uses certificates from its own PKI, with the same SAN URIs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockstep_core::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::client::ClientTls;
use crate::config::TlsConfig;
use crate::identity::CertIdentity;

/// Certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The request is not usable (no nodes, a node id 0, a bad client name, ...).
    #[error("invalid certificate request: {0}")]
    Invalid(String),
    /// The certificate library failed.
    #[error("generating certificates: {0}")]
    Generate(String),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file (or directory).
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn gen_err(e: rcgen::Error) -> CertsError {
    CertsError::Generate(e.to_string())
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A certificate authority that signs node and client certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, CertsError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.distinguished_name.push(DnType::CommonName, common_name);
        let cert = p.self_signed(&key).map_err(gen_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// The CA certificate, PEM (what every node's and client's `ca` is).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate of node `id` of `cluster_id`, valid for the DNS names and IP
    /// addresses in `hosts`, usable as a server and as a client certificate.
    pub fn node_cert(
        &self,
        cluster_id: &str,
        id: NodeId,
        hosts: &[String],
    ) -> Result<CertifiedKey, CertsError> {
        if id == 0 {
            return Err(CertsError::Invalid("node id 0 is reserved".into()));
        }
        let identity = CertIdentity::Node {
            cluster_id: cluster_id.to_string(),
            id,
        };
        self.leaf(&format!("node-{id}"), hosts, &[identity.uri()], true)
    }

    /// The certificate of client `name` of `cluster_id` (client use only).
    pub fn client_cert(&self, cluster_id: &str, name: &str) -> Result<CertifiedKey, CertsError> {
        let identity = CertIdentity::Client {
            cluster_id: cluster_id.to_string(),
            name: name.to_string(),
        };
        self.leaf(&format!("client-{name}"), &[], &[identity.uri()], false)
    }

    /// A certificate named `common_name` with `hosts` (DNS names or IP addresses) and
    /// `uris` as subject alternative names, for client use and, with `server`, server use
    /// too. [`CertificateAuthority::node_cert`] and [`CertificateAuthority::client_cert`]
    /// are the usual ways; this one also makes certificates lockstep refuses (no identity,
    /// several), to test that it does.
    pub fn leaf(
        &self,
        common_name: &str,
        hosts: &[String],
        uris: &[String],
        server: bool,
    ) -> Result<CertifiedKey, CertsError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut p = CertificateParams::new(hosts.to_vec()).map_err(gen_err)?;
        for uri in uris {
            let ia5 = uri
                .as_str()
                .try_into()
                .map_err(|_| CertsError::Invalid(format!("URI {uri:?} is not ASCII")))?;
            p.subject_alt_names.push(SanType::URI(ia5));
        }
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = if server {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let cert = p.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What [`generate`] makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertsSpec {
    /// The cluster id every identity names.
    pub cluster_id: String,
    /// The nodes to make certificates for.
    pub nodes: Vec<NodeId>,
    /// The clients to make certificates for (letters, digits, `-`, `_`, `.`).
    pub clients: Vec<String>,
    /// DNS names and IP addresses every node certificate is valid for.
    pub hosts: Vec<String>,
}

impl CertsSpec {
    /// Certificates for `nodes` of `cluster_id`, valid for `127.0.0.1` and `localhost`, and
    /// no clients.
    pub fn new(cluster_id: impl Into<String>, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            nodes: nodes.into_iter().collect(),
            clients: Vec::new(),
            hosts: default_hosts(),
        }
    }

    /// Adds client certificates (builder style).
    pub fn with_clients<S: Into<String>>(mut self, clients: impl IntoIterator<Item = S>) -> Self {
        self.clients.extend(clients.into_iter().map(Into::into));
        self
    }

    fn validate(&self) -> Result<(), CertsError> {
        let invalid = |m: String| Err(CertsError::Invalid(m));
        if self.cluster_id.trim().is_empty() || self.cluster_id.len() > 256 {
            return invalid("the cluster id must be 1 to 256 bytes".into());
        }
        if self.nodes.is_empty() {
            return invalid("no nodes".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for id in &self.nodes {
            if *id == 0 {
                return invalid("node id 0 is reserved".into());
            }
            if !seen.insert(*id) {
                return invalid(format!("node {id} is listed twice"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for c in &self.clients {
            let ok = !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !c.starts_with('.');
            if !ok {
                return invalid(format!(
                    "client name {c:?}: expected 1 to 64 letters, digits, `-`, `_` or `.`"
                ));
            }
            if !names.insert(c) {
                return invalid(format!("client {c:?} is listed twice"));
            }
        }
        if self.hosts.is_empty() {
            return invalid("no hosts for the node certificates".into());
        }
        Ok(())
    }
}

/// `127.0.0.1` and `localhost`.
pub fn default_hosts() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

/// A CA and the certificates of a cluster's nodes and clients.
#[derive(Debug)]
pub struct ClusterCerts {
    /// The cluster the identities name.
    pub cluster_id: String,
    /// The CA that signed everything.
    pub ca: CertificateAuthority,
    /// Each node's certificate.
    pub nodes: BTreeMap<NodeId, CertifiedKey>,
    /// Each client's certificate.
    pub clients: BTreeMap<String, CertifiedKey>,
}

/// Makes a new CA and a certificate for every node and client of `spec`.
pub fn generate(spec: &CertsSpec) -> Result<ClusterCerts, CertsError> {
    spec.validate()?;
    let ca = CertificateAuthority::new(&format!("lockstep CA of cluster {}", spec.cluster_id))?;
    let mut nodes = BTreeMap::new();
    for id in &spec.nodes {
        nodes.insert(*id, ca.node_cert(&spec.cluster_id, *id, &spec.hosts)?);
    }
    let mut clients = BTreeMap::new();
    for name in &spec.clients {
        clients.insert(name.clone(), ca.client_cert(&spec.cluster_id, name)?);
    }
    Ok(ClusterCerts {
        cluster_id: spec.cluster_id.clone(),
        ca,
        nodes,
        clients,
    })
}

impl ClusterCerts {
    /// Node `id`'s TLS settings (its certificate and key, the CA), if it has a certificate.
    pub fn node_tls(&self, id: NodeId, require_client_cert: bool) -> Option<TlsConfig> {
        let c = self.nodes.get(&id)?;
        Some(TlsConfig {
            cert_pem: c.cert_pem.clone(),
            key_pem: c.key_pem.clone(),
            ca_pem: self.ca.cert_pem.clone(),
            require_client_cert,
            domain_name: None,
        })
    }

    /// Client `name`'s TLS settings, if it has a certificate.
    pub fn client_tls(&self, name: &str) -> Option<ClientTls> {
        let c = self.clients.get(name)?;
        Some(ClientTls {
            ca_pem: self.ca.cert_pem.clone(),
            identity: Some((c.cert_pem.clone(), c.key_pem.clone())),
            domain_name: None,
        })
    }

    /// Writes `ca.pem`, `ca.key`, `node-<id>.pem` / `.key` and `client-<name>.pem` / `.key`
    /// into `dir` (created if missing), keys readable by the owner only (mode 0600).
    /// Existing files are replaced only with `overwrite`. Returns the files written.
    pub fn write(&self, dir: &Path, overwrite: bool) -> Result<Vec<PathBuf>, CertsError> {
        std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<(String, &str, bool)> = vec![
            ("ca.pem".into(), self.ca.cert_pem.as_str(), false),
            ("ca.key".into(), self.ca.key_pem.as_str(), true),
        ];
        for (id, c) in &self.nodes {
            files.push((format!("node-{id}.pem"), c.cert_pem.as_str(), false));
            files.push((format!("node-{id}.key"), c.key_pem.as_str(), true));
        }
        for (name, c) in &self.clients {
            files.push((format!("client-{name}.pem"), c.cert_pem.as_str(), false));
            files.push((format!("client-{name}.key"), c.key_pem.as_str(), true));
        }
        if !overwrite {
            // Refuse before writing anything, so a refused run leaves the directory as it was.
            for (name, _, _) in &files {
                let path = dir.join(name);
                if path.exists() {
                    return Err(CertsError::Io {
                        path,
                        source: std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "the file exists (pass --force to replace it)",
                        ),
                    });
                }
            }
        }
        let mut written = Vec::new();
        for (name, text, secret) in files {
            let path = dir.join(name);
            write_file(&path, text, secret).map_err(|source| CertsError::Io {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
        Ok(written)
    }
}

fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(if secret { 0o600 } else { 0o644 });
        let mut f = o.open(path)?;
        // The mode above applies only to a new file: tighten a replaced one too.
        f.set_permissions(std::fs::Permissions::from_mode(if secret {
            0o600
        } else {
            0o644
        }))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        let mut f = o.open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_carry_their_identity() {
        let certs = generate(&CertsSpec::new("c-1", [1, 2]).with_clients(["ops"])).unwrap();
        assert_eq!(
            CertIdentity::from_pem(&certs.nodes[&2].cert_pem).unwrap(),
            CertIdentity::Node {
                cluster_id: "c-1".into(),
                id: 2
            }
        );
        assert_eq!(
            CertIdentity::from_pem(&certs.clients["ops"].cert_pem).unwrap(),
            CertIdentity::Client {
                cluster_id: "c-1".into(),
                name: "ops".into()
            }
        );
        let plain = certs
            .ca
            .leaf("x", &default_hosts(), &[], true)
            .unwrap()
            .cert_pem;
        assert_eq!(
            CertIdentity::from_pem(&plain).unwrap_err(),
            crate::identity::IdentityError::Missing
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        for spec in [
            CertsSpec::new("c", []),
            CertsSpec::new("c", [0]),
            CertsSpec::new("c", [1, 1]),
            CertsSpec::new("", [1]),
            CertsSpec::new("c", [1]).with_clients(["a/b"]),
            CertsSpec::new("c", [1]).with_clients([""]),
        ] {
            assert!(
                matches!(generate(&spec), Err(CertsError::Invalid(_))),
                "{spec:?}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_written_for_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lockstep-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let certs = generate(&CertsSpec::new("c", [1]).with_clients(["a"])).unwrap();
        let files = certs.write(&dir, false).unwrap();
        assert_eq!(files.len(), 6);
        for f in &files {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            let key = f.extension().is_some_and(|e| e == "key");
            assert_eq!(mode, if key { 0o600 } else { 0o644 }, "{}", f.display());
        }
        assert!(matches!(
            certs.write(&dir, false),
            Err(CertsError::Io { .. })
        ));
        certs.write(&dir, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
