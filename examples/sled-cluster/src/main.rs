//! The node and client binary of the sled cluster example: `node --config FILE` runs one
//! node, `client --config FILE COMMAND` talks to the cluster (see README.md).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Logs go to stderr; RUST_LOG=debug shows more.
    lockstep::cli::init_logging();
    lockstep::cli::run().await
}
