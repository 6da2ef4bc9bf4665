//! TLS and mutual TLS with certificates generated in the test (rcgen).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use lockstep_core::MembershipConfig;
use lockstep_transport_grpc::{Client, ClientConfig, ClientTls, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A certificate for 127.0.0.1 / localhost, good for servers and clients; (cert, key).
fn leaf(ca: &Ca, name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn node_tls(ca: &Ca, name: &str, require_client_cert: bool) -> TlsConfig {
    let (cert_pem, key_pem) = leaf(ca, name);
    TlsConfig {
        cert_pem,
        key_pem,
        ca_pem: ca.pem.clone(),
        require_client_cert,
        domain_name: None,
    }
}

fn client_config(tls: Option<ClientTls>, timeout: Duration) -> ClientConfig {
    let mut c = ClientConfig::new(CLUSTER);
    c.tls = tls;
    c.timeout = timeout;
    c.attempt_timeout = timeout.min(Duration::from_secs(2));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_tls_cluster_works_and_refuses_clients_without_a_certificate() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let ca = new_ca("lockstep test CA");
        // Every node gets its own certificate; start_cluster takes one config for all, so
        // build the nodes here.
        let ids = [1u64, 2, 3];
        let mut nodes = Vec::new();
        for id in ids {
            let cfg = config(id, Some(node_tls(&ca, &format!("node-{id}"), true)));
            nodes.push(start_node(cfg, Some(MembershipConfig::new_voters(ids))).await);
        }
        for n in &nodes {
            for m in &nodes {
                if m.id != n.id {
                    n.transport.add_peer(m.id, m.addr_string()).unwrap();
                }
            }
        }
        let leader =
            wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(15)).await;
        assert!(ids.contains(&leader));

        let addrs: Vec<String> = nodes.iter().map(|n| n.addr_string()).collect();
        let (cert, key) = leaf(&ca, "client");
        let tls = ClientTls {
            ca_pem: ca.pem.clone(),
            identity: Some((cert, key)),
            domain_name: None,
        };
        let client = Client::connect(
            addrs.clone(),
            client_config(Some(tls), Duration::from_secs(10)),
        )
        .await
        .expect("an mTLS client connects");
        for i in 0..20 {
            client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
        }
        for i in 0..20 {
            assert_eq!(
                client.get(format!("k{i}")).await.unwrap(),
                Some(Bytes::from(format!("v{i}")))
            );
        }

        // No client certificate: refused.
        let no_cert = ClientTls {
            ca_pem: ca.pem.clone(),
            identity: None,
            domain_name: None,
        };
        assert!(
            Client::connect(
                addrs.clone(),
                client_config(Some(no_cert), Duration::from_millis(800))
            )
            .await
            .is_err(),
            "a client without a certificate is refused"
        );
        // A certificate from another CA: refused, and the client does not trust the nodes.
        let other = new_ca("another CA");
        let (cert, key) = leaf(&other, "intruder");
        let intruder = ClientTls {
            ca_pem: other.pem.clone(),
            identity: Some((cert, key)),
            domain_name: None,
        };
        assert!(Client::connect(
            addrs.clone(),
            client_config(Some(intruder), Duration::from_millis(800))
        )
        .await
        .is_err());
        // Plain text against a TLS server: refused.
        assert!(
            Client::connect(addrs, client_config(None, Duration::from_millis(800)))
                .await
                .is_err()
        );

        for n in &mut nodes {
            n.kill().await;
        }
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_tls_accepts_clients_that_trust_the_ca() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca("lockstep test CA");
        let cfg = config(1, Some(node_tls(&ca, "node-1", false)));
        let mut n = start_node(cfg, Some(MembershipConfig::new_voters([1]))).await;
        wait_for_leader(&[&n], Duration::from_secs(10)).await;
        let tls = ClientTls {
            ca_pem: ca.pem.clone(),
            identity: None,
            domain_name: Some("localhost".into()),
        };
        let client = Client::connect(
            vec![n.addr_string()],
            client_config(Some(tls), Duration::from_secs(10)),
        )
        .await
        .expect("connects");
        client.put("a", "b").await.unwrap();
        assert_eq!(client.get("a").await.unwrap(), Some(Bytes::from("b")));
        // A client that does not trust the node's CA is refused.
        let other = new_ca("another CA");
        let untrusting = ClientTls {
            ca_pem: other.pem.clone(),
            identity: None,
            domain_name: None,
        };
        assert!(Client::connect(
            vec![n.addr_string()],
            client_config(Some(untrusting), Duration::from_millis(800))
        )
        .await
        .is_err());
        n.kill().await;
    })
    .await
    .expect("in time");
}
