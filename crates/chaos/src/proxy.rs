//! Loopback TCP proxies that can cut a link: the chaos run's network partitions.
//!
//! Every directed link between two nodes (`from` → `to`) gets a proxy of its own, and the
//! sender's configuration names the proxy as the receiver's address. Peer messages travel
//! on the connection their sender opens (one long-lived stream per peer, see the gRPC
//! transport), so cutting the proxy of `a → b` stops what `a` sends to `b` and nothing
//! else: a one-way partition. A cut closes the link's open connections and refuses new
//! ones until it is healed.
//!
//! Bounded: at most [`MAX_CONNECTIONS_PER_LINK`] connections per link at once (more are
//! refused), and dropping the [`Proxies`] stops every task.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lockstep::NodeId;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Connections one link carries at most at once.
pub const MAX_CONNECTIONS_PER_LINK: usize = 64;

/// A directed link: what `from` sends to `to`. `from == 0` is the shared inbound link of a
/// node that joined at runtime (every member reaches it at the one address it announced).
pub type Link = (NodeId, NodeId);

struct LinkState {
    cut: AtomicBool,
    open: AtomicUsize,
    /// The tasks forwarding the link's open connections, aborted by a cut.
    conns: Mutex<Vec<JoinHandle<()>>>,
}

impl LinkState {
    fn conns(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts one open connection of a link for as long as its task lives (aborted or not).
struct OpenGuard(Arc<LinkState>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

struct ProxyLink {
    addr: SocketAddr,
    state: Arc<LinkState>,
    acceptor: JoinHandle<()>,
}

/// The proxies of a cluster, one per directed link.
#[derive(Default)]
pub struct Proxies {
    links: BTreeMap<Link, ProxyLink>,
}

impl Proxies {
    /// Starts a proxy for `link` forwarding to `target`; returns the address to give the
    /// sender for the receiver.
    pub async fn add(&mut self, link: Link, target: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(LinkState {
            cut: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if st.cut.load(Ordering::SeqCst)
                    || st.open.load(Ordering::SeqCst) >= MAX_CONNECTIONS_PER_LINK
                {
                    drop(inbound);
                    continue;
                }
                st.open.fetch_add(1, Ordering::SeqCst);
                let guard = OpenGuard(st.clone());
                let task = tokio::spawn(async move {
                    let _guard = guard;
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let mut inbound = inbound;
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut conns = st.conns();
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        self.links.insert(
            link,
            ProxyLink {
                addr,
                state,
                acceptor,
            },
        );
        Ok(addr)
    }

    /// The proxy address of `link`, if it has one.
    pub fn addr(&self, link: Link) -> Option<SocketAddr> {
        self.links.get(&link).map(|l| l.addr)
    }

    /// Cuts `link`: its open connections close and new ones are refused until [`heal`].
    ///
    /// [`heal`]: Proxies::heal
    pub fn cut(&self, link: Link) {
        if let Some(l) = self.links.get(&link) {
            l.state.cut.store(true, Ordering::SeqCst);
            for task in l.state.conns().drain(..) {
                task.abort();
            }
        }
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        for l in self.links.values() {
            l.state.cut.store(false, Ordering::SeqCst);
        }
    }

    /// Restores `link`.
    pub fn heal(&self, link: Link) {
        if let Some(l) = self.links.get(&link) {
            l.state.cut.store(false, Ordering::SeqCst);
        }
    }

    /// The links cut now.
    pub fn cut_links(&self) -> Vec<Link> {
        self.links
            .iter()
            .filter(|(_, l)| l.state.cut.load(Ordering::SeqCst))
            .map(|(k, _)| *k)
            .collect()
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for l in self.links.values() {
            l.acceptor.abort();
            for t in l.state.conns().drain(..) {
                t.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(std::time::Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn a_cut_link_refuses_connections_until_healed_and_closes_open_ones() {
        let target = echo_server().await;
        let mut p = Proxies::default();
        let addr = p.add((1, 2), target).await.unwrap();
        assert_eq!(round_trip(addr).await.unwrap(), b"ping");

        let mut open = TcpStream::connect(addr).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.unwrap();

        p.cut((1, 2));
        assert_eq!(p.cut_links(), vec![(1, 2)]);
        assert!(
            round_trip(addr).await.is_err(),
            "a cut link must not carry data"
        );
        // The connection that was open when the link was cut is closed.
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), open.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)));

        p.heal((1, 2));
        assert_eq!(round_trip(addr).await.unwrap(), b"ping");
    }
}
