//! The node and client binary of the RocksDB cluster example: `node --config FILE` runs one
//! node, `client --config FILE COMMAND` talks to the cluster (see README.md).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Logs go to stderr; RUST_LOG=debug shows more.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    lockstep::cli::run().await
}
