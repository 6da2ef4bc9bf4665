//! The node and client binary of the sled cluster example: `node --config FILE` runs one
//! node, `client --config FILE COMMAND` talks to the cluster (see README.md).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lockstep::cli::run().await
}
