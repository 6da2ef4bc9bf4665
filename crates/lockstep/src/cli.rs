//! The `lockstep` command-line tool (feature `grpc`): run a node from a config file, or talk
//! to a cluster. The `lockstep` binary and the cluster examples call [`run`]; they install
//! the log subscriber themselves (this library never does).
//!
//! ```text
//! lockstep node --config n1.toml
//! lockstep client --config n1.toml put KEY VALUE
//! lockstep client --addrs 127.0.0.1:7001,127.0.0.1:7002 --cluster-id demo get KEY --level lease
//! lockstep client ... [-o json|table] status | members | endpoint health | endpoint status --cluster
//! lockstep client ... delete KEY | transfer-leader ID | add-learner ID ADDR | remove-learner ID
//!                     | set-voters 1,2,3 | snapshot
//! lockstep certs --cluster-id demo --out certs --nodes 1,2,3 [--clients ops] [--hosts 127.0.0.1,localhost]
//! ```
//! `--help` and `--version` exit 0, a usage error exits 2, a failed command exits 1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::grpc::{ClientTls, RemoteStatus};
use crate::prelude::*;
use crate::{Client, ClientConfig, NodeId};

/// Any error, described for the user.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, CliError>;

/// Replicated state machines on Raft: run a node, or talk to a cluster.
#[derive(Debug, Parser)]
#[command(name = "lockstep", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node from a config file (see docs/configuration.md); stops on SIGINT or SIGTERM.
    Node {
        /// The node's TOML configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Talk to a cluster through any of its nodes.
    Client(Box<ClientArgs>),
    /// Make a CA and node and client certificates for a test cluster (see docs/security.md).
    Certs(CertsArgs),
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// The cluster id the certificates name (the nodes' `cluster_id`).
    #[arg(long)]
    cluster_id: String,
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Node ids, comma-separated: node-ID.pem and node-ID.key for each.
    #[arg(long, value_name = "1,2,..", value_delimiter = ',', required = true)]
    nodes: Vec<NodeId>,
    /// Client names, comma-separated: client-NAME.pem and client-NAME.key for each.
    #[arg(long, value_name = "NAME,..", value_delimiter = ',')]
    clients: Vec<String>,
    /// DNS names and IP addresses the nodes are reached at, comma-separated.
    #[arg(
        long,
        value_name = "HOST,..",
        value_delimiter = ',',
        default_value = "127.0.0.1,localhost"
    )]
    hosts: Vec<String>,
    /// Replace files that exist already.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// Take the cluster id, the node addresses and TLS from a node's config file.
    #[arg(long, value_name = "FILE", conflicts_with = "addrs")]
    config: Option<PathBuf>,
    /// Node addresses (host:port), comma-separated.
    #[arg(
        long,
        value_name = "A,B,..",
        value_delimiter = ',',
        required_unless_present = "config"
    )]
    addrs: Vec<String>,
    /// The cluster id (with --addrs).
    #[arg(long, default_value = "lockstep")]
    cluster_id: String,
    /// Deadline of one command, retries included, in milliseconds.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Output format of status, members and endpoint commands.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    /// CA certificate (PEM) the nodes' certificates chain to: turns TLS on.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), for clusters that require mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Name to verify in the nodes' certificates (default: the host of the address).
    #[arg(long, value_name = "NAME")]
    tls_domain: Option<String>,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Level {
    Linearizable,
    Lease,
    Eventual,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Write a key.
    Put { key: String, value: String },
    /// Read a key.
    Get {
        key: String,
        /// Consistency level.
        #[arg(long, value_enum, default_value_t = Level::Linearizable)]
        level: Level,
    },
    /// Delete a key.
    Delete { key: String },
    /// The leader's role, term, commit and applied index, and per-peer progress.
    Status,
    /// The cluster's voters and learners, with their addresses.
    Members,
    /// Hand leadership to node ID.
    TransferLeader { id: NodeId },
    /// Add node ID, listening on ADDR, as a learner.
    AddLearner { id: NodeId, addr: String },
    /// Remove learner ID.
    RemoveLearner { id: NodeId },
    /// Make exactly IDS (comma-separated) the voters.
    SetVoters {
        #[arg(value_delimiter = ',', required = true)]
        ids: Vec<NodeId>,
    },
    /// Build a snapshot on the leader now.
    Snapshot,
    /// Ask each endpoint itself, not the leader.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
}

#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// Whether each endpoint answers and runs (exits 1 if one does not).
    Health {
        /// Every member of the cluster, not only the given addresses.
        #[arg(long)]
        cluster: bool,
    },
    /// One row per endpoint: id, role, term, leader, commit, applied.
    Status {
        /// Every member of the cluster, not only the given addresses.
        #[arg(long)]
        cluster: bool,
    },
}

/// For binaries: installs a log subscriber writing to stderr, filtered by `RUST_LOG`
/// (default `info`). The library never calls it; a node binary's `main` does, before
/// [`run`], and an application embedding lockstep installs whatever subscriber it likes.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// With this environment variable set, the tool only parses its arguments and exits 0 (or
/// 2 with the usage error).
pub const CHECK_ARGS: &str = "LOCKSTEP_CHECK_ARGS";

/// Runs the command line given in the process arguments and turns its outcome into the
/// exit code: the whole body of a node binary's `main`.
pub async fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Help and version print to stdout and exit 0; usage errors exit 2.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    // `cargo xtask docs` checks the commands in the documentation this way: parsed, not run.
    if std::env::var_os(CHECK_ARGS).is_some() {
        return ExitCode::SUCCESS;
    }
    match main(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub async fn main(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Node { config } => node(config).await.map(|()| ExitCode::SUCCESS),
        Command::Client(args) => client(*args).await,
        Command::Certs(args) => certs(args).map(|()| ExitCode::SUCCESS),
    }
}

/// `lockstep certs`: writes the CA and the certificates, and names each file written.
fn certs(args: CertsArgs) -> Result<()> {
    use crate::grpc::certs::{generate, CertsSpec};
    let spec = CertsSpec {
        cluster_id: args.cluster_id,
        nodes: args.nodes,
        clients: args.clients,
        hosts: args.hosts,
    };
    let files = generate(&spec)?.write(&args.out, args.force)?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

async fn node(path: PathBuf) -> Result<()> {
    let config = Config::from_file(&path)?;
    let id = config.node_id;
    let node = NodeBuilder::from_config(config).start().await?;
    let addr = node.local_addr().await;
    eprintln!(
        "node {id} running on {}",
        addr.map_or("?".into(), |a| a.to_string())
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut status = node.watch_status();
    // A node that stops by itself (fail-stop on a storage error) ends the process with an
    // error, so a supervisor (systemd, Kubernetes) sees it and can restart it.
    let stopped = async move {
        loop {
            if let Some(why) = status.borrow_and_update().stopped.clone() {
                return why;
            }
            if status.changed().await.is_err() {
                return "the node stopped".to_string();
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        why = stopped => {
            node.shutdown().await.ok();
            return Err(format!("node {id} stopped: {why}").into());
        }
    }
    eprintln!("node {id} shutting down");
    node.shutdown().await?;
    Ok(())
}

fn read(path: &PathBuf, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()).into())
}

/// The client configuration and addresses the arguments name.
fn client_config(args: &ClientArgs) -> Result<(Vec<String>, ClientConfig)> {
    let (addrs, cluster_id, file_tls) = match &args.config {
        Some(path) => {
            let c = Config::from_file(path)?;
            (
                c.peers.values().cloned().collect::<Vec<_>>(),
                c.cluster_id,
                c.tls,
            )
        }
        None => (args.addrs.clone(), args.cluster_id.clone(), None),
    };
    let mut cfg = ClientConfig::new(cluster_id);
    if let Some(ms) = args.timeout_ms {
        cfg.timeout = Duration::from_millis(ms);
    }
    cfg.tls = match (&args.ca, file_tls) {
        (Some(ca), _) => Some(ClientTls {
            ca_pem: read(ca, "--ca")?,
            identity: match (&args.cert, &args.key) {
                (Some(c), Some(k)) => Some((read(c, "--cert")?, read(k, "--key")?)),
                _ => None,
            },
            domain_name: args.tls_domain.clone(),
        }),
        // The node's own certificate serves as the client's with mutual TLS.
        (None, Some(t)) => Some(ClientTls {
            ca_pem: read(&t.ca, "tls.ca")?,
            identity: Some((read(&t.cert, "tls.cert")?, read(&t.key, "tls.key")?)),
            domain_name: args.tls_domain.clone(),
        }),
        (None, None) => None,
    };
    Ok((addrs, cfg))
}

async fn client(args: ClientArgs) -> Result<ExitCode> {
    let (addrs, cfg) = client_config(&args)?;
    let c = Client::connect(addrs.clone(), cfg).await?;
    let out = args.output;
    match args.command {
        ClientCommand::Put { key, value } => {
            c.put(key, value).await?;
            println!("OK");
        }
        ClientCommand::Get { key, level } => {
            let level = match level {
                Level::Linearizable => ReadLevel::Linearizable,
                Level::Lease => ReadLevel::Lease,
                Level::Eventual => ReadLevel::Eventual,
            };
            match c.get_at(key, level).await? {
                Some(v) => println!("{}", String::from_utf8_lossy(&v)),
                None => println!("(not found)"),
            }
        }
        ClientCommand::Delete { key } => {
            c.delete(key).await?;
            println!("OK");
        }
        ClientCommand::Status => print_status(out, &c.status().await?)?,
        ClientCommand::Members => print_members(out, &c.status().await?)?,
        ClientCommand::TransferLeader { id } => {
            let to = c.transfer_leader(id).await?;
            println!("leader is now node {to}");
        }
        ClientCommand::AddLearner { id, addr } => {
            let m = c.add_learner(id, addr).await?;
            println!("{m}");
        }
        ClientCommand::RemoveLearner { id } => {
            let m = c.remove_learner(id).await?;
            println!("{m}");
        }
        ClientCommand::SetVoters { ids } => {
            let m = c.set_voters(ids).await?;
            println!("{m}");
        }
        ClientCommand::Snapshot => {
            let at = c.trigger_snapshot().await?;
            println!("snapshot at index {} (term {})", at.index, at.term);
        }
        ClientCommand::Endpoint { command } => {
            let (cluster, health) = match command {
                EndpointCommand::Health { cluster } => (cluster, true),
                EndpointCommand::Status { cluster } => (cluster, false),
            };
            let endpoints = if cluster {
                member_addrs(&c.status().await?)
            } else {
                addrs
            };
            let mut rows = Vec::new();
            for addr in endpoints {
                let r = c.status_of(&addr).await.map_err(|e| e.to_string());
                rows.push((addr, r));
            }
            let healthy = rows
                .iter()
                .all(|(_, r)| r.as_ref().is_ok_and(|s| s.stopped.is_none()));
            if health {
                print_health(out, &rows)?;
            } else {
                print_endpoints(out, &rows)?;
            }
            if !healthy {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The address of every member, as the node that answered `s` reaches them.
fn member_addrs(s: &RemoteStatus) -> Vec<String> {
    let m = &s.membership;
    m.voters
        .iter()
        .chain(&m.outgoing)
        .chain(&m.learners)
        .copied()
        .collect::<std::collections::BTreeSet<NodeId>>()
        .into_iter()
        .filter_map(|id| s.peer_addrs.get(&id).cloned())
        .collect()
}

fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_status(out: Output, s: &RemoteStatus) -> Result<()> {
    if out == Output::Json {
        return json(s);
    }
    let opt = |v: Option<NodeId>| v.map_or("-".to_string(), |v| v.to_string());
    println!("node      {}", s.node_id);
    println!("role      {:?}", s.role);
    println!("term      {}", s.term);
    println!("leader    {}", opt(s.leader));
    println!("commit    {}", s.commit);
    println!("applied   {}", s.applied);
    println!(
        "last log  {} (term {})",
        s.last_log_id.index, s.last_log_id.term
    );
    println!("snapshot  {} (term {})", s.snapshot.index, s.snapshot.term);
    println!("members   {}", s.membership);
    if let Some(why) = &s.stopped {
        println!("stopped   {why}");
    }
    if !s.progress.is_empty() {
        println!(
            "\n{:<6} {:>10} {:>10} {:<12} {:>9} {:>14}",
            "PEER", "MATCH", "NEXT", "STATE", "IN FLIGHT", "LAST CONTACT"
        );
        for (id, p) in &s.progress {
            let contact = p
                .last_contact_ms
                .map_or("never".into(), |ms| format!("{ms} ms ago"));
            println!(
                "{:<6} {:>10} {:>10} {:<12} {:>9} {:>14}",
                id,
                p.matched,
                p.next,
                format!("{:?}", p.state),
                p.in_flight,
                contact
            );
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Member {
    id: NodeId,
    role: &'static str,
    addr: Option<String>,
}

fn print_members(out: Output, s: &RemoteStatus) -> Result<()> {
    let m = &s.membership;
    let mut members: BTreeMap<NodeId, &'static str> = BTreeMap::new();
    for id in &m.outgoing {
        members.insert(*id, "voter (outgoing)");
    }
    for id in &m.voters {
        members.insert(*id, "voter");
    }
    for id in &m.learners {
        members.insert(*id, "learner");
    }
    let rows: Vec<Member> = members
        .into_iter()
        .map(|(id, role)| Member {
            id,
            role,
            addr: s.peer_addrs.get(&id).cloned(),
        })
        .collect();
    if out == Output::Json {
        return json(&rows);
    }
    println!("{:<6} {:<18} ADDRESS", "ID", "ROLE");
    for r in rows {
        println!(
            "{:<6} {:<18} {}",
            r.id,
            r.role,
            r.addr.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Health<'a> {
    endpoint: &'a str,
    healthy: bool,
    error: Option<String>,
}

fn print_health(
    out: Output,
    rows: &[(String, std::result::Result<RemoteStatus, String>)],
) -> Result<()> {
    let rows: Vec<Health<'_>> = rows
        .iter()
        .map(|(addr, r)| match r {
            Ok(s) => Health {
                endpoint: addr,
                healthy: s.stopped.is_none(),
                error: s.stopped.clone(),
            },
            Err(e) => Health {
                endpoint: addr,
                healthy: false,
                error: Some(e.clone()),
            },
        })
        .collect();
    if out == Output::Json {
        return json(&rows);
    }
    for h in rows {
        match (&h.healthy, &h.error) {
            (true, _) => println!("{} is healthy", h.endpoint),
            (false, e) => println!(
                "{} is unhealthy: {}",
                h.endpoint,
                e.as_deref().unwrap_or("?")
            ),
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct EndpointRow<'a> {
    endpoint: &'a str,
    #[serde(flatten)]
    status: Option<&'a RemoteStatus>,
    error: Option<&'a str>,
}

fn print_endpoints(
    out: Output,
    rows: &[(String, std::result::Result<RemoteStatus, String>)],
) -> Result<()> {
    if out == Output::Json {
        let v: Vec<EndpointRow<'_>> = rows
            .iter()
            .map(|(addr, r)| EndpointRow {
                endpoint: addr,
                status: r.as_ref().ok(),
                error: r.as_ref().err().map(String::as_str),
            })
            .collect();
        return json(&v);
    }
    println!(
        "{:<22} {:>4} {:<12} {:>6} {:>6} {:>10} {:>10}",
        "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED"
    );
    for (addr, r) in rows {
        match r {
            Ok(s) => println!(
                "{:<22} {:>4} {:<12} {:>6} {:>6} {:>10} {:>10}",
                addr,
                s.node_id,
                format!("{:?}", s.role),
                s.term,
                s.leader.map_or("-".into(), |l| l.to_string()),
                s.commit,
                s.applied
            ),
            Err(e) => println!("{addr:<22} unreachable: {e}"),
        }
    }
    Ok(())
}
