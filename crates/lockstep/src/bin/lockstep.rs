//! The `lockstep` command-line tool; see [`lockstep::cli`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Logs go to stderr; RUST_LOG=debug shows more.
    lockstep::cli::init_logging();
    lockstep::cli::run().await
}
