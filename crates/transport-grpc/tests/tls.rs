//! TLS and mutual TLS with certificates from `lockstep_transport_grpc::certs` (what
//! `lockstep certs` writes).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use lockstep_core::MembershipConfig;
use lockstep_transport_grpc::certs::{generate, CertificateAuthority, CertsSpec};
use lockstep_transport_grpc::{Client, ClientConfig, ClientTls};

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
        let ids = [1u64, 2, 3];
        let certs = generate(&CertsSpec::new(CLUSTER, ids).with_clients(["app"])).unwrap();
        let mut nodes = tls_cluster(&certs, &ids, true).await;
        let leader =
            wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(15)).await;
        assert!(ids.contains(&leader));

        let addrs: Vec<String> = nodes.iter().map(|n| n.addr_string()).collect();
        let tls = certs.client_tls("app").unwrap();
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

        // A node's certificate serves as a client certificate too (the CLI uses it).
        let node_cert = ClientTls {
            ca_pem: certs.ca.cert_pem().to_string(),
            identity: Some((
                certs.nodes[&2].cert_pem.clone(),
                certs.nodes[&2].key_pem.clone(),
            )),
            domain_name: None,
        };
        let as_node = Client::connect(
            addrs.clone(),
            client_config(Some(node_cert), Duration::from_secs(10)),
        )
        .await
        .expect("a node certificate calls the client API");
        assert_eq!(as_node.get("k0").await.unwrap(), Some(Bytes::from("v0")));

        // No client certificate: refused.
        let no_cert = ClientTls {
            ca_pem: certs.ca.cert_pem().to_string(),
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
        let other = CertificateAuthority::new("another CA").unwrap();
        let stolen = other.client_cert(CLUSTER, "intruder").unwrap();
        let intruder = ClientTls {
            ca_pem: other.cert_pem().to_string(),
            identity: Some((stolen.cert_pem, stolen.key_pem)),
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
        let certs = generate(&CertsSpec::new(CLUSTER, [1])).unwrap();
        let cfg = config(1, certs.node_tls(1, false));
        let mut n = start_node(cfg, Some(MembershipConfig::new_voters([1]))).await;
        wait_for_leader(&[&n], Duration::from_secs(10)).await;
        let tls = ClientTls {
            ca_pem: certs.ca.cert_pem().to_string(),
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
        let other = CertificateAuthority::new("another CA").unwrap();
        let untrusting = ClientTls {
            ca_pem: other.cert_pem().to_string(),
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
