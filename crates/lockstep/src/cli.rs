//! The `lockstep` command-line tool (feature `grpc`): run a node from a config file, or talk
//! to a cluster. The `lockstep` binary and the cluster examples call [`main`].
//!
//! ```text
//! lockstep node --config n1.toml
//! lockstep client --config n1.toml put KEY VALUE
//! lockstep client --addrs 127.0.0.1:7001,127.0.0.1:7002 --cluster-id demo get KEY [--level lease]
//! lockstep client ... delete KEY | status | members | transfer-leader ID
//!                     | add-learner ID ADDR | set-voters 1,2,3
//! ```
//! Logs go to stderr; `RUST_LOG=debug` shows more.

use std::time::Duration;

use crate::prelude::*;
use crate::{Client, ClientConfig};

/// Any error, described for the user.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, CliError>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(format!($($t)*).into()) };
}

trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| format!("{what}: {e}").into())
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T> {
        self.ok_or_else(|| what.to_string().into())
    }
}

const USAGE: &str = "usage:
  lockstep node --config FILE
  lockstep client (--config FILE | --addrs A,B,.. [--cluster-id ID]) [--timeout-ms N] COMMAND
commands:
  put KEY VALUE          write a key
  get KEY [--level L]    read a key (L = linearizable | lease | eventual)
  delete KEY             delete a key
  status                 the contacted node's role, term, leader, commit and applied index
  members                the cluster's voters and learners
  transfer-leader ID     hand leadership to node ID
  add-learner ID ADDR    add node ID (listening on ADDR) as a learner
  set-voters IDS         make exactly IDS (comma-separated) the voters";

fn flag(args: &mut Vec<String>, name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.remove(i);
    (i < args.len()).then(|| args.remove(i))
}

/// Runs [`main`] and turns its outcome into the process exit code, printing any error:
/// the whole body of a node binary's `main`.
pub async fn run() -> std::process::ExitCode {
    match main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the command line given in the process arguments; logs go to stderr.
pub async fn main() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("node") => {
            args.remove(0);
            node(args).await
        }
        Some("client") => {
            args.remove(0);
            client(args).await
        }
        _ => {
            eprintln!("{USAGE}");
            bail!("expected `node` or `client`")
        }
    }
}

async fn node(mut args: Vec<String>) -> Result<()> {
    let path = flag(&mut args, "--config").context("`node` needs --config FILE")?;
    let config = Config::from_file(&path)?;
    let id = config.node_id;
    let node = NodeBuilder::from_config(config).start().await?;
    let addr = node.local_addr().await;
    eprintln!(
        "node {id} running on {}",
        addr.map_or("?".into(), |a| a.to_string())
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("node {id} shutting down");
    node.shutdown().await?;
    Ok(())
}

async fn client(mut args: Vec<String>) -> Result<()> {
    let (addrs, cluster_id) = match flag(&mut args, "--config") {
        Some(path) => {
            let c = Config::from_file(&path)?;
            (c.peers.values().cloned().collect::<Vec<_>>(), c.cluster_id)
        }
        None => {
            let addrs = flag(&mut args, "--addrs")
                .context("`client` needs --config FILE or --addrs A,B,..")?;
            let cluster = flag(&mut args, "--cluster-id").unwrap_or_else(|| "lockstep".into());
            (
                addrs.split(',').map(|s| s.trim().to_string()).collect(),
                cluster,
            )
        }
    };
    let mut cfg = ClientConfig::new(cluster_id);
    if let Some(ms) = flag(&mut args, "--timeout-ms") {
        cfg.timeout = Duration::from_millis(ms.parse().context("--timeout-ms")?);
    }
    let level = match flag(&mut args, "--level").as_deref() {
        None | Some("linearizable") => ReadLevel::Linearizable,
        Some("lease") => ReadLevel::Lease,
        Some("eventual") => ReadLevel::Eventual,
        Some(other) => bail!("unknown read level {other:?}"),
    };
    let c = Client::connect(addrs, cfg).await?;
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["put", k, v] => {
            c.put(k.to_string(), v.to_string()).await?;
            println!("OK");
        }
        ["get", k] => match c.get_at(k.to_string(), level).await? {
            Some(v) => println!("{}", String::from_utf8_lossy(&v)),
            None => println!("(not found)"),
        },
        ["delete", k] => {
            c.delete(k.to_string()).await?;
            println!("OK");
        }
        ["status"] => {
            let s = c.status().await?;
            println!("{s:#?}");
        }
        ["members"] => {
            let s = c.status().await?;
            println!("{:#?}", s.membership);
        }
        ["transfer-leader", id] => {
            let to = c.transfer_leader(id.parse().context("node id")?).await?;
            println!("leader is now node {to}");
        }
        ["add-learner", id, addr] => {
            let m = c
                .add_learner(id.parse().context("node id")?, addr.to_string())
                .await?;
            println!("{m:#?}");
        }
        ["set-voters", ids] => {
            let ids: Vec<u64> = ids
                .split(',')
                .map(|s| s.trim().parse::<u64>())
                .collect::<std::result::Result<_, _>>()
                .context("node ids")?;
            let m = c.set_voters(ids).await?;
            println!("{m:#?}");
        }
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown client command {words:?}")
        }
    }
    Ok(())
}
