//! Certificate identities: which node or client of which cluster a TLS certificate speaks
//! for.
//!
//! With TLS, every certificate of a lockstep cluster carries its identity as a
//! subject-alternative-name URI:
//!
//! - `lockstep://<cluster-id>/node/<id>` for a node: the only certificates the peer service
//!   accepts, and a peer message must claim to be from that node of that cluster;
//! - `lockstep://<cluster-id>/client/<name>` for a client: accepted by the client API (as is
//!   a node's certificate), refused by the peer service.
//!
//! Characters of the cluster id or client name outside `A-Z a-z 0-9 - . _ ~` are
//! percent-encoded in the URI. `lockstep certs` (or the `certs` module, feature `certs`) makes
//! such certificates.

use lockstep_core::NodeId;

/// The URI scheme of lockstep identities, with its `://`.
pub const SCHEME: &str = "lockstep://";

/// Whom a certificate identifies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertIdentity {
    /// Node `id` of cluster `cluster_id`: may call the peer service as that node.
    Node {
        /// The cluster.
        cluster_id: String,
        /// The node.
        id: NodeId,
    },
    /// Client `name` of cluster `cluster_id`: may call the client API only.
    Client {
        /// The cluster.
        cluster_id: String,
        /// The client's name.
        name: String,
    },
}

/// A certificate without a usable lockstep identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate is not a parseable X.509 certificate.
    #[error("the certificate does not parse: {0}")]
    Unparseable(String),
    /// The certificate has no `lockstep://` SAN URI.
    #[error(
        "the certificate has no lockstep identity (a SAN URI lockstep://CLUSTER/node/ID or \
         lockstep://CLUSTER/client/NAME; `lockstep certs` makes such certificates)"
    )]
    Missing,
    /// The certificate has more than one `lockstep://` SAN URI.
    #[error("the certificate has several lockstep identities ({0}); it must have exactly one")]
    Several(String),
    /// A `lockstep://` URI that does not have the expected form.
    #[error("malformed lockstep identity {uri:?}: {detail}")]
    Malformed {
        /// The URI.
        uri: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl CertIdentity {
    /// The cluster the identity belongs to.
    pub fn cluster_id(&self) -> &str {
        match self {
            CertIdentity::Node { cluster_id, .. } | CertIdentity::Client { cluster_id, .. } => {
                cluster_id
            }
        }
    }

    /// The SAN URI of this identity (`lockstep://CLUSTER/node/ID` or
    /// `lockstep://CLUSTER/client/NAME`).
    pub fn uri(&self) -> String {
        match self {
            CertIdentity::Node { cluster_id, id } => {
                format!("{SCHEME}{}/node/{id}", encode(cluster_id))
            }
            CertIdentity::Client { cluster_id, name } => {
                format!("{SCHEME}{}/client/{}", encode(cluster_id), encode(name))
            }
        }
    }

    /// Parses a `lockstep://` URI.
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let malformed = |detail: &str| IdentityError::Malformed {
            uri: uri.to_string(),
            detail: detail.to_string(),
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| malformed("expected the scheme lockstep://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [cluster, kind, value] = parts.as_slice() else {
            return Err(malformed(
                "expected lockstep://CLUSTER/node/ID or lockstep://CLUSTER/client/NAME",
            ));
        };
        let cluster_id = decode(cluster).ok_or_else(|| malformed("bad percent-encoding"))?;
        if cluster_id.is_empty() {
            return Err(malformed("the cluster id is empty"));
        }
        match *kind {
            "node" => {
                let id = value
                    .parse::<NodeId>()
                    .ok()
                    .filter(|id| *id != 0 && value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| malformed("the node id is not a positive integer"))?;
                Ok(CertIdentity::Node { cluster_id, id })
            }
            "client" => {
                let name = decode(value).ok_or_else(|| malformed("bad percent-encoding"))?;
                if name.is_empty() {
                    return Err(malformed("the client name is empty"));
                }
                Ok(CertIdentity::Client { cluster_id, name })
            }
            _ => Err(malformed("the role must be `node` or `client`")),
        }
    }

    /// The identity of a DER-encoded X.509 certificate: its only `lockstep://` SAN URI.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
        let uris: Vec<&str> = san
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(u) if u.starts_with(SCHEME) => Some(*u),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        match uris.as_slice() {
            [] => Err(IdentityError::Missing),
            [one] => Self::parse_uri(one),
            many => Err(IdentityError::Several(many.join(", "))),
        }
    }

    /// The identity of the first certificate of a PEM document.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| IdentityError::Unparseable(format!("not a PEM certificate: {e}")))?;
        Self::from_der(&p.contents)
    }
}

impl std::fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertIdentity::Node { cluster_id, id } => {
                write!(f, "node {id} of cluster {cluster_id:?}")
            }
            CertIdentity::Client { cluster_id, name } => {
                write!(f, "client {name:?} of cluster {cluster_id:?}")
            }
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes every byte outside the URI's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes [`encode`]; `None` for a bad `%` sequence or bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for id in [
            CertIdentity::Node {
                cluster_id: "prod-eu".into(),
                id: 3,
            },
            CertIdentity::Client {
                cluster_id: "a cluster/with odd chars%".into(),
                name: "ops tool".into(),
            },
        ] {
            assert_eq!(CertIdentity::parse_uri(&id.uri()).unwrap(), id);
        }
        assert_eq!(
            CertIdentity::Node {
                cluster_id: "c".into(),
                id: 7
            }
            .uri(),
            "lockstep://c/node/7"
        );
    }

    #[test]
    fn malformed_uris_are_refused() {
        for uri in [
            "https://c/node/1",
            "lockstep://c/node/0",
            "lockstep://c/node/+1",
            "lockstep://c/node/x",
            "lockstep://c/admin/1",
            "lockstep:///node/1",
            "lockstep://c/client/",
            "lockstep://c/node/1/extra",
            "lockstep://c%zz/node/1",
            "lockstep://c%+1/node/1",
        ] {
            assert!(CertIdentity::parse_uri(uri).is_err(), "{uri}");
        }
    }
}
