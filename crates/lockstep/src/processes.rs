//! Real multi-process clusters for tests (features `testing` and `grpc`): N `lockstep node`
//! processes (or any binary that runs [`crate::cli::main`]) on 127.0.0.1, each with its own
//! config and data directory under a temporary directory, which can be SIGKILLed and
//! restarted; and the standard smoke scenario the cluster examples run in CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Client, ClientConfig, NodeId, ReadLevel};

/// A cluster of node processes.
pub struct ProcessCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    cluster_id: String,
    addrs: Vec<String>,
    procs: Vec<Option<Child>>,
}

fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let ls = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    ls.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl ProcessCluster {
    /// Writes configs for `n` founding voters using `storage` (a `storage = ...` value) plus
    /// `extra` TOML appended to every config (with `{id}` replaced by the node's id, e.g. for
    /// `cert = "certs/node-{id}.pem"`), and starts every node with `bin node --config`.
    pub fn start(
        bin: impl Into<PathBuf>,
        n: usize,
        storage: &str,
        extra: &str,
    ) -> std::io::Result<Self> {
        let mut c = Self::prepare(bin, n, storage, extra, &std::env::temp_dir())?;
        for id in 1..=n as NodeId {
            c.launch(id)?;
        }
        Ok(c)
    }

    /// As [`ProcessCluster::start`], under a fresh temporary directory in `base`, but starts
    /// no node: start them with [`ProcessCluster::launch`], or run one in this process from
    /// its [`ProcessCluster::config_path`].
    pub fn prepare(
        bin: impl Into<PathBuf>,
        n: usize,
        storage: &str,
        extra: &str,
        base: &Path,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(base)?;
        let dir = tempfile::tempdir_in(base)?;
        let ports = free_ports(n)?;
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let cluster_id = "process-cluster".to_string();
        let peers: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{} = \"{a}\"\n", i + 1))
            .collect();
        let voters: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i + 1;
            let text = format!(
                "node_id = {id}\ncluster_id = \"{cluster_id}\"\nlisten = \"{addr}\"\ndata_dir = \"{}\"\nstorage = \"{storage}\"\n{}\n[peers]\n{peers}\n[bootstrap]\nvoters = [{}]\n",
                dir.path().join(format!("data{id}")).display(),
                extra.replace("{id}", &id.to_string()),
                voters.join(", ")
            );
            std::fs::write(dir.path().join(format!("n{id}.toml")), text)?;
        }
        Ok(Self {
            dir,
            bin: bin.into(),
            cluster_id,
            addrs,
            procs: (0..n).map(|_| None).collect(),
        })
    }

    /// Starts node `id`'s process (`bin node --config`), from its data directory; its
    /// stderr goes to [`ProcessCluster::log_path`].
    pub fn launch(&mut self, id: NodeId) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        let child = Command::new(&self.bin)
            .args(["node", "--config"])
            .arg(self.config_path(id))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.procs[id as usize - 1] = Some(child);
        Ok(())
    }

    /// The process id of node `id`, while its process runs.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.procs.get(id as usize - 1)?.as_ref().map(Child::id)
    }

    /// The cluster id every config names.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The config file of node `id`.
    pub fn config_path(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("n{id}.toml"))
    }

    /// The log (stderr) of node `id`.
    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("n{id}.log"))
    }

    /// The cluster's directory (configs, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every node's address, in node-id order.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// SIGKILLs node `id` (no shutdown path runs).
    pub fn kill(&mut self, id: NodeId) {
        if let Some(mut c) = self.procs.get_mut(id as usize - 1).and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `id` again from its data directory.
    pub fn restart(&mut self, id: NodeId) -> std::io::Result<()> {
        self.kill(id);
        self.launch(id)
    }

    /// A client of the whole cluster, once it answers.
    pub async fn client(&self) -> Result<Client, String> {
        self.client_of(self.addrs.clone()).await
    }

    /// A client that talks to node `id` only (reads at `Eventual` see that node's copy).
    pub async fn client_for(&self, id: NodeId) -> Result<Client, String> {
        self.client_of(vec![self.addrs[id as usize - 1].clone()])
            .await
    }

    async fn client_of(&self, addrs: Vec<String>) -> Result<Client, String> {
        let mut cfg = ClientConfig::new(self.cluster_id.clone());
        cfg.timeout = Duration::from_secs(20);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(addrs.clone(), cfg.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("cluster unreachable: {e}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until node `id` applied at least `index`.
    pub async fn wait_applied(&self, id: NodeId, index: u64) -> Result<(), String> {
        let c = self.client_for(id).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = c.status().await {
                if s.applied >= index {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("node {id} did not apply up to {index} within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for id in 1..=self.procs.len() as NodeId {
            self.kill(id);
        }
    }
}

async fn write(
    client: &Client,
    range: std::ops::Range<u32>,
    acked: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for i in range {
        let (k, v) = (format!("key-{i:05}"), format!("value-{i}"));
        client
            .put(k.clone(), v.clone())
            .await
            .map_err(|e| format!("writing {k}: {e}"))?;
        acked.insert(k, v);
    }
    Ok(())
}

/// The cluster examples' smoke test: 3 processes; write 1,000 keys; SIGKILL the leader;
/// write 1,000 more; restart the killed node; every one of the 2,000 keys is then readable
/// with a linearizable read through every node, and present in every node's own copy.
pub async fn smoke(bin: impl Into<PathBuf>, storage: &str) -> Result<(), String> {
    let mut cluster = ProcessCluster::start(bin, 3, storage, "").map_err(|e| e.to_string())?;
    let client = cluster.client().await?;
    let mut acked = BTreeMap::new();
    write(&client, 0..1000, &mut acked).await?;
    let leader = client
        .status()
        .await
        .map_err(|e| e.to_string())?
        .leader
        .ok_or("no leader after 1,000 writes")?;
    cluster.kill(leader);
    write(&client, 1000..2000, &mut acked).await?;
    cluster.restart(leader).map_err(|e| e.to_string())?;
    let commit = client.status().await.map_err(|e| e.to_string())?.commit;
    for id in 1..=3 {
        cluster.wait_applied(id, commit).await?;
        let through = cluster.client_for(id).await?;
        for (k, v) in &acked {
            for level in [ReadLevel::Linearizable, ReadLevel::Eventual] {
                let got = through
                    .get_at(k.clone(), level)
                    .await
                    .map_err(|e| format!("node {id}: reading {k} at {level:?}: {e}"))?;
                if got.as_deref() != Some(v.as_bytes()) {
                    return Err(format!(
                        "node {id}: {k} at {level:?} is {got:?}, expected {v}"
                    ));
                }
            }
        }
    }
    Ok(())
}
